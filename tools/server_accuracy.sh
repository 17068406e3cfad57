#!/usr/bin/env bash
# Class accuracy of images generated THROUGH THE SERVER (not the PyTorch reference): starts `./dit serve` with the
# bundled models on a free port, asks `./dit generate` for PER_CLASS images of every class of MODEL at the model's
# default settings, and has the judge score the PNGs (tools/judge_images.py).
#
#   bash tools/server_accuracy.sh [MODEL] [PER_CLASS] [SEED]     # defaults: fashion-latent-dit 100 1234
#
# BACKEND (java|onnx, default java) picks the backend, NUM_CLASSES (default 10) how many classes. Writes the
# images and accuracy.json under target/server-accuracy/MODEL/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL="${1:-fashion-latent-dit}"; PER_CLASS="${2:-100}"; SEED="${3:-1234}"
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
OUT="target/server-accuracy/$MODEL"
rm -rf "$OUT"; mkdir -p "$OUT"
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./dit serve --port "$PORT" --backend "${BACKEND:-java}" --set max_images="$PER_CLASS" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2> /dev/null || true; wait "$SERVER" 2> /dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "listening" "$OUT/server.log" && break
  kill -0 "$SERVER" 2> /dev/null || { cat "$OUT/server.log"; echo "server_accuracy: the server exited"; exit 1; }
  sleep 0.2
done
grep -q "listening" "$OUT/server.log" || { cat "$OUT/server.log"; echo "server_accuracy: no server in 120 s"; exit 1; }
START=$SECONDS
for ((c = 0; c < ${NUM_CLASSES:-10}; c++)); do
  DIT_SKIP_BUILD=1 ./dit generate --target "127.0.0.1:$PORT" --model "$MODEL" --label "$c" --count "$PER_CLASS" \
    --seed "$SEED" --out "$OUT/$c" > "$OUT/generate-$c.log" 2>&1 \
    || { cat "$OUT/generate-$c.log"; echo "server_accuracy: generation of class $c failed"; exit 1; }
done
echo "server_accuracy: ${NUM_CLASSES:-10} classes × $PER_CLASS images in $((SECONDS - START)) s"
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} /usr/bin/python3 tools/judge_images.py "$OUT" \
  --json "$OUT/accuracy.json"
