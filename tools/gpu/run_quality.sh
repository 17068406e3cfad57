#!/usr/bin/env bash
# The quality-against-cost curve of issue 12 on a GPU machine (python3 with torch; no JDK needed), from the
# repository root:
#
#   bash tools/gpu/run_quality.sh            # 2000 images per setting, the default settings of tools/quality_curve.py
#
# Writes quality.json, quality.md and quality.png to $OUT/quality (./quality-run without $OUT): copy them to
# docs/quality/ and the table into README ("Quality against cost"). On 2 CPU cores the same run would take about
# 13 hours (about 15 ms per model evaluation of one image), which is why it waits for a GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEST="${OUT:-$ROOT/quality-run}/quality"
mkdir -p "$DEST"
python3 tools/quality_curve.py --images "${IMAGES:-2000}" --repeats 3 --batch 1000 --out "$DEST" 2>&1 \
  | tee "$DEST/quality.log"
