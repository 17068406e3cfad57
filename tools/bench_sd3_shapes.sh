#!/usr/bin/env bash
# SD3-medium's components at real shapes (issue 24): random weights in BF16 in diffusers' released layout
# (tools/sd3/make_shaped_sd3.py: the MMDiT, CLIP-L, CLIP-G and T5-XXL, 7.67 G parameters, 15.3 GB), then per backend,
# one JVM each (io.ditserve.backend.onnx.Sd3ShapesBench from the onnx module's test class path): load time, resident
# memory (VmRSS/VmHWM) with the three encoders and the transformer held together, the time to encode a prompt and its
# empty negative (batch 2) per encoder, and one transformer forward of one sample at 1024² and at 512².
#
#   tools/bench_sd3_shapes.sh [DIR (/tmp/w/sd3-medium)]
#   env: SIZE (medium | small), BACKENDS ("java onnx"), THREADS (2), KEEP (0: delete the weights afterwards),
#        JAVA_ARGS (java: "java.max_batch=2"), ONNX_ARGS (onnx: "separate onnx.optimization=none": see below),
#        EXTRA ("java-f32": also the transformer alone with java.weights=f32, the float32 twin, for the speed cost),
#        HEAP (-Xmx, 3g: java keeps 16-bit weights off the heap; the heap holds activations, and a default-sized heap
#        would let G1 commit gigabytes of garbage from the first, not yet compiled, passes), F32_HEAP (12g: the heap of
#        the java.weights=f32 run, whose float32 weights are on the heap)
#
# onnx loads one component at a time and with onnx.optimization=none by default: with its default optimisation ONNX
# Runtime folds the Casts of 16-bit weights into float32 initializers at load (docs/TEXT_MODELS.md "The onnx
# backend"), and the pipeline in float32 (31 GB) does not fit a 24 GB machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-/tmp/w/sd3-medium}"
SIZE=${SIZE:-medium}
BACKENDS=${BACKENDS:-java onnx}
THREADS=${THREADS:-2}
JAVA_ARGS=${JAVA_ARGS:-java.max_batch=2}
ONNX_ARGS=${ONNX_ARGS:-separate onnx.optimization=none}
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}

if [ ! -f "$DIR/model_index.json" ]; then
  echo "== random $SIZE SD3 components (BF16) in $DIR"
  start=$(date +%s)
  /usr/bin/python3 "$ROOT/tools/sd3/make_shaped_sd3.py" --out "$DIR" --size "$SIZE"
  echo "written in $(( $(date +%s) - start )) s"
fi
du -sh "$DIR"/*/ | sed 's/^/  /'

source "$ROOT/tools/onnx_bench_env.sh"
onnx_bench_build
CP="$ONNX_BENCH_CP"
JVM=("${ONNX_BENCH_JVM[@]}" -XX:MaxNewSize=64m)
MAIN=(-cp "$CP" io.ditserve.backend.onnx.Sd3ShapesBench)
run() { "${JVM[@]}" "-Xmx${HEAP:-3g}" "${MAIN[@]}" "$@" 2>&1 | grep -v -E "^WARNING|^[A-Z][a-z]{2} [0-9]{2}, [0-9]{4} " || true; }

for b in $BACKENDS; do
  echo "== $b"
  case "$b" in
    java) run "$DIR" java "$THREADS" $JAVA_ARGS ;;
    onnx) run "$DIR" onnx "$THREADS" $ONNX_ARGS ;;
    *) echo "unknown backend $b" >&2; exit 2 ;;
  esac
done
if [[ " ${EXTRA:-} " == *" java-f32 "* ]]; then
  echo "== java, transformer alone, java.weights=stored then f32 (the same bits; the speed cost of decoding panels)"
  run "$DIR" java "$THREADS" transformer-only $JAVA_ARGS java.weights=stored
  HEAP=${F32_HEAP:-12g} run "$DIR" java "$THREADS" transformer-only $JAVA_ARGS java.weights=f32
fi
if [ "${KEEP:-0}" != 1 ]; then
  rm -rf "$DIR"
  echo "(deleted $DIR; KEEP=1 keeps it)"
fi
