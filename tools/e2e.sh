#!/usr/bin/env bash
# End-to-end: starts `./dit serve` as a process on a free port with the bundled model, runs `./dit models` and
# `./dit generate --previews` against it, checks the files, then stops the server with SIGTERM (graceful drain).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"

# on a machine without an NVIDIA GPU, --backend cuda fails at start-up, fast, naming what is missing
if ! nvidia-smi > /dev/null 2>&1; then
  START=$SECONDS
  if ./dit serve --backend cuda --port 0 --set metrics_port=-1 > "$WORK/cuda.log" 2>&1; then
    echo "e2e: --backend cuda started without a GPU"; exit 1
  fi
  grep -q "cannot start: the cuda backend cannot run here: the CUDA driver library (libcuda.so.1" "$WORK/cuda.log" \
    || { cat "$WORK/cuda.log"; echo "e2e: unclear cuda failure"; exit 1; }
  echo "e2e: --backend cuda without a GPU failed clearly in $((SECONDS - START)) s"
fi
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./dit serve --port "$PORT" --threads 2 --set metrics_port=0 > "$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 120); do
  grep -q "listening on port" "$WORK/server.log" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log"; echo "e2e: server exited"; exit 1; }
  sleep 0.5
done
grep -q "listening on port" "$WORK/server.log" || { cat "$WORK/server.log"; echo "e2e: server did not start"; exit 1; }

./dit models --target "localhost:$PORT" | tee "$WORK/models.txt"
grep -q "fashion-dit" "$WORK/models.txt"

./dit generate --target "localhost:$PORT" --model fashion-dit --label Trouser --count 2 --steps 20 \
  --sampler ddim --guidance 3 --seed 7 --out "$WORK/out" --previews | tee "$WORK/gen.txt"
for f in fashion-dit-Trouser-7.png fashion-dit-Trouser-8.png fashion-dit-Trouser-7.gif; do
  [ -s "$WORK/out/$f" ] || { echo "e2e: missing $f"; ls -la "$WORK/out"; exit 1; }
done
grep -q "seeds \[7, 8\]" "$WORK/gen.txt"
# the PNG is a real 28x28 image
/usr/bin/python3 - "$WORK/out/fashion-dit-Trouser-7.png" <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1])
assert im.size == (28, 28), im.size
lo, hi = im.getextrema()
assert hi - lo > 100, (lo, hi)
print("e2e: result image ok", im.size, im.mode, (lo, hi))
PY
# an invalid request is answered with INVALID_ARGUMENT, and the server keeps serving
if ./dit generate --target "localhost:$PORT" --model fashion-dit --label 12 --out "$WORK/bad" 2> "$WORK/bad.txt"; then
  echo "e2e: invalid label was accepted"; exit 1
fi
grep -q "INVALID_ARGUMENT: class_id" "$WORK/bad.txt"
# a client in another language: Python with Debian's grpcio, messages built from the descriptor set
/usr/bin/python3 tools/clients/python/dit_client.py --target "localhost:$PORT" --model fashion-dit --label Bag \
  --count 2 --steps 10 --seed 11 --out "$WORK/py" | tee "$WORK/py.txt"
[ -s "$WORK/py/fashion-dit-11.png" ] && [ -s "$WORK/py/fashion-dit-12.png" ] || { echo "e2e: python client wrote no images"; exit 1; }
if /usr/bin/python3 tools/clients/python/dit_client.py --target "localhost:$PORT" --model nonesuch 2> "$WORK/py-bad.txt"; then
  echo "e2e: python client: unknown model accepted"; exit 1
fi
grep -q "NOT_FOUND" "$WORK/py-bad.txt"
kill -TERM "$SERVER"
wait "$SERVER" || true
grep -q "stopped" "$WORK/server.log" || { cat "$WORK/server.log"; echo "e2e: no graceful stop"; exit 1; }
trap - EXIT

# the same request on the onnx backend gives the same images (at most one level apart on 99.9 % of pixels)
PORT2=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./dit serve --backend onnx --port "$PORT2" --threads 2 --set metrics_port=-1 > "$WORK/onnx.log" 2>&1 &
SERVER=$!
trap cleanup EXIT
for _ in $(seq 1 120); do
  grep -q "listening on port" "$WORK/onnx.log" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/onnx.log"; echo "e2e: onnx server exited"; exit 1; }
  sleep 0.5
done
./dit models --target "localhost:$PORT2" | grep -q "backend=onnx"
./dit generate --target "localhost:$PORT2" --model fashion-dit --label Trouser --count 2 --steps 20 \
  --sampler ddim --guidance 3 --seed 7 --out "$WORK/onnx-out" > /dev/null
/usr/bin/python3 - "$WORK/out" "$WORK/onnx-out" <<'PY'
import sys
from PIL import Image, ImageChops
for name in ("fashion-dit-Trouser-7.png", "fashion-dit-Trouser-8.png"):
    a = Image.open(f"{sys.argv[1]}/{name}").convert("L")
    b = Image.open(f"{sys.argv[2]}/{name}").convert("L")
    diff = list(ImageChops.difference(a, b).getdata())
    close = sum(d <= 1 for d in diff) / len(diff)
    assert close >= 0.999, (name, close, max(diff))
    print(f"e2e: {name} java vs onnx: {close:.4f} of pixels within one level, max diff {max(diff)}")
PY
kill -TERM "$SERVER"; wait "$SERVER" || true
trap - EXIT
rm -rf "$WORK"
echo "e2e: ok"
