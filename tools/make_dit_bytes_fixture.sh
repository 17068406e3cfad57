#!/usr/bin/env bash
# Records the bytes a DiT folder sampled before the model contract became family-neutral (issue 23), so that a test
# (server/src/test/.../DitBytesUnchangedTest.java) proves the redesign changed none of them: it checks out COMMIT
# (default 96df53d, the last commit before the redesign) in a scratch worktree, builds it, serves the fixture models
# and the bundled ones with it, and writes each case of tools/dit-bytes/cases.tsv as float32 tensors
# (the raw sample; the decoded image too for a latent model with a VAE) into tools/dit-bytes/.
#   bash tools/make_dit_bytes_fixture.sh [COMMIT]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMIT="${1:-96df53d}"
OUT="$ROOT/tools/dit-bytes"
WORK="$(mktemp -d)"
trap 'kill "${PID:-0}" 2> /dev/null || true; git -C "$ROOT" worktree remove --force "$WORK/src" > /dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$ROOT" worktree add --detach "$WORK/src" "$COMMIT" > /dev/null
mkdir -p "$WORK/models"
for m in pixel-tiny latent-tiny; do cp -r "$ROOT/tools/fixtures/$m" "$WORK/models/$m"; done
for m in fashion-dit fashion-latent-dit; do cp -r "$ROOT/models/$m" "$WORK/models/$m"; done
cd "$WORK/src"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./dit serve --backend java --port "$PORT" --models "$WORK/models" --threads 2 --set metrics_port=-1 > "$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do grep -q "serving models" "$WORK/serve.log" && break; sleep 0.2; done
grep -q "serving models" "$WORK/serve.log" || { cat "$WORK/serve.log"; exit 1; }
rm -f "$OUT"/*.f32
# cases.tsv: NAME MODEL LABEL COUNT STEPS SAMPLER GUIDANCE ETA STEP_CACHE SEED FORMATS
grep -v '^#' "$ROOT/tools/dit-bytes/cases.tsv" | while IFS=$'\t' read -r name model label count steps sampler guidance eta cache seed formats; do
  [ -n "$name" ] || continue
  DIT_SKIP_BUILD=1 ./dit generate --target "127.0.0.1:$PORT" --model "$model" --label "$label" --count "$count" \
    --steps "$steps" --sampler "$sampler" --guidance "$guidance" --eta "$eta" --step-cache "$cache" --seed "$seed" \
    --format "$formats" --out "$WORK/out/$name" > "$WORK/gen.log" 2>&1 || { cat "$WORK/gen.log"; exit 1; }
  for f in "$WORK/out/$name"/*.f32; do cp "$f" "$OUT/$name.$(basename "$f")"; done
done
ls -l "$OUT"
