#!/usr/bin/env bash
# The quality-against-cost curve of issue 12 on a GPU machine (python3 with torch; no JDK needed), from the
# repository root:
#
#   bash tools/gpu/run_quality.sh            # 2000 images per setting, the default settings of tools/quality_curve.py
#   MODEL=models/fashion-dit bash tools/gpu/run_quality.sh     # the pixel model (default: fashion-latent-dit)
#
# Writes quality.json, quality.md and quality.png to $OUT/quality (./quality-run without $OUT): copy them to
# docs/quality/ and the table into README ("Quality against cost"). On 2 CPU cores the latent model's run takes about
# 2 hours (about 2.5 ms per model evaluation of one image); the pixel model's about 13 hours (about 15 ms).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEST="${OUT:-$ROOT/quality-run}/quality"
mkdir -p "$DEST"
python3 tools/quality_curve.py --model "${MODEL:-models/fashion-latent-dit}" --images "${IMAGES:-2000}" --repeats 3 --batch 1000 --out "$DEST" 2>&1 \
  | tee "$DEST/quality.log"
