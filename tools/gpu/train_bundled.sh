#!/usr/bin/env bash
# Trains the bundled Fashion-MNIST DiT on one GPU, trains the judge classifier, evaluates, and leaves the results
# in $OUT (the device tool's output folder; any folder works). Needs python3 with torch and the Fashion-MNIST
# .gz files in .data/ (copied from /usr/share/datasets/fashion-mnist).
#   OUT=/tmp/out TRAIN_SECONDS=390 bash tools/gpu/train_bundled.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; RUN=${RUN:-/tmp/run}; TRAIN_SECONDS=${TRAIN_SECONDS:-390}
mkdir -p "$OUT" "$RUN"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 tools/train.py --out "$RUN" --data .data --time-budget "$TRAIN_SECONDS" --steps 1000000 --batch 512 \
  --hidden 256 --depth 6 --heads 4 --patch 4 --lr 3e-4 --warmup 500 --ema 0.9995 --ckpt-every 5000 \
  | awk 'NR<=3 || /000 loss/ || /stopped/'
python3 - "$RUN" "$OUT" <<'PY'
import sys, torch
run, out = sys.argv[1], sys.argv[2]
ck = torch.load(run + "/checkpoint.pt", map_location="cpu", weights_only=False)
torch.save(dict(ema=ck["ema"], config=ck["config"], step=ck["step"], elapsed=ck["elapsed"], args=ck["args"]), run + "/ema.pt")
PY
split -b 15M -d "$RUN/ema.pt" "$OUT/ema.pt.part"
python3 tools/classifier.py --out "$RUN/classifier.pt" --epochs 10 --data .data
cp "$RUN/classifier.pt" "$OUT/"
FASHION_MNIST_DIR=.data python3 tools/evaluate.py --model "$RUN/checkpoint.pt" --classifier "$RUN/classifier.pt" \
  --per-class 100 --guidance 1 2 3 4 --json "$RUN/eval.json" --grid "$RUN/grid.png" --grid-guidance 4
(cd "$RUN" && gzip -k loss.csv && tar czf "$OUT/results.tar.gz" loss.csv.gz train_state.json classifier.json eval.json grid.png)
ls -la "$OUT"
