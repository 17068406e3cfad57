#!/usr/bin/env bash
# Trains the bundled latent model (models/fashion-latent-dit) on one GPU: the small AutoencoderKL, then the latent
# DiT on its latents, then the evaluation of the model card. Needs python3 with torch and the Fashion-MNIST .gz
# files in .data/ (copied from /usr/share/datasets/fashion-mnist). Results in $OUT.
#   OUT=/tmp/out VAE_SECONDS=240 DIT_SECONDS=420 bash tools/gpu/train_latent.sh
# Then, on a machine with the repository: tools/export_bundled.py $OUT/latent-checkpoint.pt models/fashion-latent-dit
# --vae <the vae folder from $OUT> --guidance G.
set -euo pipefail
export PYTHONUNBUFFERED=1 FASHION_MNIST_DIR=.data
OUT=${OUT:-/tmp/out}; RUN=${RUN:-/tmp/run-latent}
mkdir -p "$OUT" "$RUN"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 tools/train_vae.py --out "$RUN/vae" --data .data --time-budget "${VAE_SECONDS:-240}" --batch 256 --lr 1e-3 \
  | awk '/000 mse/ || /stopped/'
python3 tools/train_vae.py --out "$RUN/vae" --data .data --export "$RUN/vae-export"
python3 tools/train.py --out "$RUN/dit" --data .data --latents "$RUN/vae/latents.pt" --patch 2 --hidden 256 --depth 6 \
  --heads 4 --batch 512 --lr 3e-4 --warmup 500 --ema 0.9995 --time-budget "${DIT_SECONDS:-420}" --steps 1000000 \
  --ckpt-every 5000 | awk 'NR<=3 || /000 loss/ || /stopped/'
python3 tools/evaluate.py --model "$RUN/dit/checkpoint.pt" --vae "$RUN/vae-export" \
  --classifier tools/eval/classifier.pt --per-class 100 --guidance 1 2 3 4 5 6 --frechet --json "$RUN/eval.json"
cp "$RUN/dit/checkpoint.pt" "$OUT/latent-checkpoint.pt"
(cd "$RUN" && tar czf "$OUT/latent-results.tar.gz" vae-export vae/loss.csv dit/loss.csv dit/train_state.json eval.json)
ls -la "$OUT"
