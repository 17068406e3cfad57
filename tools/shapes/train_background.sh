#!/usr/bin/env bash
# Starts, or resumes, the bundled text-to-image model's training in the background on this 2-core machine
# (nice 10, one torch thread; survives the shell). Log: runs/shapes/train.out and runs/shapes/log.jsonl.
#   bash tools/shapes/train_background.sh            # start, or resume when runs/shapes/ckpt.pt exists, or continue
#                                                    # from the committed models/shapes on a machine without it
#   bash tools/shapes/train_background.sh --stop     # checkpoint and stop (SIGTERM; the trainer saves first)
# Extra arguments go to tools/shapes/train.py (on resume they override the checkpoint's options).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUN=${RUN:-runs/shapes}
mkdir -p "$RUN"
running() { [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null \
  && grep -q "shapes/train.py" "/proc/$(cat "$RUN/pid")/cmdline" 2>/dev/null; }
if [ "${1:-}" = --stop ]; then
  if running; then kill -TERM "$(cat "$RUN/pid")"; echo "sent SIGTERM to $(cat "$RUN/pid"); it checkpoints, then exits"
  else echo "not running"; fi
  exit 0
fi
if running; then echo "already running: pid $(cat "$RUN/pid")"; exit 0; fi
if [ -f "$RUN/ckpt.pt" ] || [ -f "$RUN/ckpt.prev.pt" ]; then ARGS=(--resume)
elif [ -f models/shapes/ditserve.json ]; then ARGS=(--init-from models/shapes)   # a new machine: the committed folder
else ARGS=(--dim 128 --depth 6 --heads 4 --patch 4 --text-hidden 64 --text-layers 3 --text-heads 4 --text-proj 64 --batch 32 --lr 8e-4 --warmup 200); fi
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} PYTHONUNBUFFERED=1 setsid nohup nice -n 10 \
  /usr/bin/python3 tools/shapes/train.py --out "$RUN" "${ARGS[@]}" "$@" >> "$RUN/train.out" 2>&1 < /dev/null &
echo $! > "$RUN/pid"
echo "started pid $(cat "$RUN/pid") (${ARGS[0]}); tail -f $RUN/train.out"
