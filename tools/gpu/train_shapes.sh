#!/usr/bin/env bash
# Trains the bundled text-to-image model (models/shapes, issue 25) on one GPU with the recipe of
# tools/shapes/train.py, then evaluates it and exports the pipeline folder; results in $OUT (the device tool's
# output folder; any folder works). Needs python3 with torch (CUDA if present; the CPU works too, slowly).
#   OUT=/tmp/out TRAIN_SECONDS=420 bash tools/gpu/train_shapes.sh            # fresh run
#   RESUME=1 RUN=runs/shapes OUT=/tmp/out bash tools/gpu/train_shapes.sh     # continue a CPU run's checkpoint
# The architecture is the CPU run's (dim 128, 8 blocks, patch 4, two 64-wide 3-layer CLIPs); only the batch, the
# learning rate and the threads change with the machine. The checkpoint ($RUN/ckpt.pt, also copied to $OUT)
# resumes on either machine: `train.py --out runs/shapes --resume` on the CPU takes its options back.
set -euo pipefail
export PYTHONUNBUFFERED=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
PY=${PY:-python3}; OUT=${OUT:-/tmp/out}; RUN=${RUN:-/tmp/run-shapes}; TRAIN_SECONDS=${TRAIN_SECONDS:-420}
BATCH=${BATCH:-256}; LR=${LR:-1e-3}; THREADS=${THREADS:-$(nproc)}; EVAL_N=${EVAL_N:-300}; EVAL_HELD=${EVAL_HELD:-96}
mkdir -p "$OUT" "$RUN"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU: CPU run"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
ARCH=(--dim 128 --depth 8 --heads 4 --patch 4 --text-hidden 64 --text-layers 3 --text-heads 4 --text-proj 64)
if [ "${RESUME:-0}" = 1 ]; then ARCH=(--resume); fi
"$PY" tools/shapes/train.py --out "$RUN" "${ARCH[@]}" --threads "$THREADS" --batch "$BATCH" --lr "$LR" \
  --time-budget "$TRAIN_SECONDS" --eval-minutes 3 --eval-n "$EVAL_N" --eval-held-out "$EVAL_HELD" --ckpt-minutes 2 \
  | awk 'NR<=2 || /"step": [0-9]*00,/ || /eval/ || /stopped/'
"$PY" tools/shapes/train.py --out "$RUN" --eval-only --eval-n "$EVAL_N" --eval-held-out "$EVAL_HELD" | tee "$OUT/eval.json"
"$PY" tools/shapes/train.py --out "$RUN" --export "$OUT/shapes"
cp "$RUN/log.jsonl" "$OUT/"
cp "$RUN/ckpt.pt" "$OUT/" 2>/dev/null || true
ls -la "$OUT"
