#!/usr/bin/env bash
# The full-size case end to end (issue 16; not in CI: 2.7 GB of weights, a few minutes):
#   1. a random-weight DiT-XL/2 checkpoint in the released layout (tools/make_random_checkpoint.py, seeded),
#   2. converted with the README's command (tools/convert.py CHECKPOINT MODELS/dit-xl-2-256),
#   3. served on java, then on onnx (one server at a time: each holds the weights), one generation each
#      (1 image, STEPS DDIM steps, guidance 4 → batch 2 per forward, the same seed),
# and prints per backend the load time (process start → listening, and the backend's own figure when it logs one),
# resident memory (VmRSS/VmHWM of the server process after load and after the generation) and seconds per step
# (the server's dit_step_seconds), then how far the java and onnx images agree.
#
# FAMILY=sit or FAMILY=repa does the same for a flow model at XL/2 size (issue 23): SiT's released layout (learned σ,
# converted with --family sit) or REPA's last.pt (with qk-norm, --family repa), sampled with Heun (SiT) or
# Euler–Maruyama (REPA) through the server.
#
#   tools/bench_full_size.sh [WORK_DIR (runs/full-size)]
#   env: STEPS (3), PORT (50181), BACKENDS ("java onnx"), FAMILY (dit | sit | repa)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mkdir -p "${1:-$ROOT/runs/full-size}" && cd "${1:-$ROOT/runs/full-size}" && pwd)"
STEPS=${STEPS:-3}
PORT=${PORT:-50181}
METRICS_PORT=$((PORT + 1))
BACKENDS=${BACKENDS:-java onnx}
PY=/usr/bin/python3
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
FAMILY=${FAMILY:-dit}
MODELS="$WORK/models"
case "$FAMILY" in
  dit) CKPT="$WORK/DiT-XL-2-256x256.pt"; MODEL=dit-xl-2-256; SAMPLER=ddim ;;
  sit) CKPT="$WORK/SiT-XL-2-256x256.pt"; MODEL=sit-xl-2-256; SAMPLER=heun ;;
  repa) CKPT="$WORK/repa-last.pt"; MODEL=repa-xl-2-256; SAMPLER=euler-maruyama ;;
  *) echo "FAMILY must be dit, sit or repa, got $FAMILY" >&2; exit 2 ;;
esac
quiet() { grep -v -E "TracerWarning|Warning: |^  (if|h = w)" || true; }

if [ ! -f "$CKPT" ]; then
  echo "== 1. random $FAMILY XL/2 checkpoint in the released layout"
  if [ "$FAMILY" = dit ]; then
    "$PY" "$ROOT/tools/make_random_checkpoint.py" "$CKPT" --shape XL --seed 7
  else
    "$PY" "$ROOT/tools/make_flow_checkpoint.py" "$CKPT" --family "$FAMILY" --shape XL --seed 7 \
      $([ "$FAMILY" = repa ] && echo --qk-norm)
  fi
fi
if [ ! -f "$MODELS/$MODEL/model.onnx" ]; then
  echo "== 2. convert (the README's command)"
  start=$(date +%s.%N)
  (cd "$WORK" && "$PY" "$ROOT/tools/convert.py" "$CKPT" "$MODELS/$MODEL" --family "$FAMILY" 2>&1 | quiet)
  echo "convert: $(echo "$(date +%s.%N) - $start" | bc) s"
fi
ls -la "$MODELS/$MODEL"

"$ROOT/dit" serve --help >/dev/null 2>&1  # builds once if needed, so that the timings below do not include a build
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %.2f GB  ", $1, $2 / 1048576}' "/proc/$1/status"; }
metric() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"\\{" || $1 == m {s += $2} END {print s + 0}'; }

for b in $BACKENDS; do
  echo "== 3. serve on $b"
  log="$WORK/serve-$b.log"
  out="$WORK/out-$b"
  rm -rf "$out" "$log"  # an old log would read as "listening" before the new server writes its own
  start=$(date +%s.%N)
  DIT_SKIP_BUILD=1 "$ROOT/dit" serve --models "$MODELS" --backend "$b" --port "$PORT" \
    --set metrics_port="$METRICS_PORT" >"$log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  until grep -q "listening on port" "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "server on $b exited:"; cat "$log"; exit 1; fi
    sleep 0.2
  done
  load=$(echo "$(date +%s.%N) - $start" | bc)
  printf "%s: listening after %.1f s; %s\n" "$b" "$load" "$(grep -o 'loaded .* in [0-9.]* s.*' "$log" | head -1)"
  echo "$b after load:       $(rss "$pid")"
  gstart=$(date +%s.%N)
  DIT_SKIP_BUILD=1 "$ROOT/dit" generate --target "localhost:$PORT" --model "$MODEL" --label 207 --count 1 \
    --steps "$STEPS" --sampler "$SAMPLER" --guidance 4 --seed 42 --out "$out" --format png,tensor >"$WORK/generate-$b.log" 2>&1 \
    || { cat "$WORK/generate-$b.log"; exit 1; }
  gen=$(echo "$(date +%s.%N) - $gstart" | bc)
  echo "$b after generation: $(rss "$pid")"
  sum=$(metric dit_step_seconds_sum)
  count=$(metric dit_step_seconds_count)
  fsum=$(metric dit_forward_seconds_sum)
  fcount=$(metric dit_forward_seconds_count)
  printf "%s: generation %.1f s (client included); %s steps, %.2f s/step; %s forwards at batch 2, %.2f s each\n" \
    "$b" "$gen" "$count" "$(echo "$sum / $count" | bc -l)" "$fcount" "$(echo "$fsum / $fcount" | bc -l)"
  kill -TERM "$pid"
  wait "$pid" || true
  trap - EXIT
done

if [ -d "$WORK/out-java" ] && [ -d "$WORK/out-onnx" ]; then  # also from an earlier run with BACKENDS=java
  echo "== 4. java vs onnx, same seed"
  "$PY" - "$WORK/out-java" "$WORK/out-onnx" <<'PYEOF'
import glob, os, sys
import numpy as np
from PIL import Image
a_dir, b_dir = sys.argv[1:3]
for pa in sorted(glob.glob(os.path.join(a_dir, "*"))):
    pb = os.path.join(b_dir, os.path.basename(pa))
    if pa.endswith(".png"):
        a = np.asarray(Image.open(pa)).astype(int)
        b = np.asarray(Image.open(pb)).astype(int)
        d = np.abs(a - b)
        print(f"{os.path.basename(pa)} {a.shape}: {100 * (d <= 1).mean():.3f} % of values within one level, "
              f"max {d.max()} levels")
    elif ".f32" in pa:
        a = np.fromfile(pa, "<f4")
        b = np.fromfile(pb, "<f4")
        print(f"{os.path.basename(pa)}: max |java - onnx| {np.abs(a - b).max():.3g} "
              f"(max |value| {np.abs(a).max():.3g})")
PYEOF
fi
