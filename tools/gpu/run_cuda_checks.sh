#!/usr/bin/env bash
# The cuda backend's checks on a GPU machine, as ONE command from the repository root with .bundle carried (made
# by tools/gpu/make_bundle.sh; the machine needs no JDK or Maven, and python3 with torch for the bench models):
#
#   bash tools/gpu/run_cuda_checks.sh [--quick | --decoders | --fashion-dit]
#
# --quick (about 2 minutes, for a short device budget): no DiT-XL/2 model, and the benchmark runs batches 1 and 16
# with 10 steps only.
# --decoders: only the latent decoders (steps 1, 2 and 5 below, and the decoder part of 3 and 6).
# --fashion-dit: only the bundled pixel model models/fashion-dit, read from the working tree: its parity checks
# (CudaParityCheck --only fashion-dit) and its benchmark. The bundle's data leaves it out to keep a call under the
# device tool's 64 MiB, so it gets a call of its own (docs/gpu/README.md, "Carrying the checks").
#
# 1. nvidia-smi and where the CUDA libraries are; DIT_CUDA_LIB_PATH is set to the folders found;
# 2. decoder cases at real sizes (tools/gpu/make_decoder_cases.py, python3 with torch): the sd-vae-ft-ema and TAESD
#    architectures with random weights, latents 2×32×32 (256 px) and 1×64×64 (512 px), float64 PyTorch reference,
#    in /tmp/dit-decoder-cases;
# 3. CudaParityCheck: fp32 and tf32 against the PyTorch fixtures (pixel-tiny, latent-tiny, fashion-dit), against
#    the java backend, buffer growth, cancellation; the first check synchronises after every kernel, so that a
#    faulting kernel is named; SD3's MMDiT and text encoders (issue 24: mmdit-tiny, mmdit-x-tiny, clip-tiny,
#    clip-tiny-g, t5-tiny in fp32 and tf32 against PyTorch, the MMDiT against the java backend); then the decoders: the small fixtures in fp32/tf32/bf16, tiles and chunks, growth,
#    cancellation, the real-shape fixtures of target/decoder-fixtures if present, and the cases of step 2;
# 4. random-weight DiT-S/2 and DiT-XL/2 model folders (tools/make_bench_model.py) in /tmp;
# 5. CudaBench on fashion-dit, DiT-S/2 and DiT-XL/2 (batches 1, 8, 16; fp32 and tf32; 50 steps at batch 16);
# 6. CudaBench --decoders on the folders of step 2 (latents 32×32 and 64×64, batches 1 and 4, fp32 and tf32).
#
# CudaParityCheck and CudaBench are test sources of backends/cuda; make_bundle.sh packs them as
# .bundle/lib/ditserve-backend-cuda-gpu-checks.jar beside the backend's jars.
#
# Everything goes to $OUT/cuda.log (./cuda.log without $OUT). Each step has its own time limit; the DiT part was
# measured at about 4 minutes on an H200, the decoder part is estimated at 2 more (not measured yet): run
# --decoders alone where the budget is short. Exit status: that of the parity check.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
LOG="${OUT:-$ROOT}/cuda.log"
step() { echo; echo "== $* [$(date +%T), ${SECONDS} s]"; }

QUICK=0
DECODERS_ONLY=0
FASHION_ONLY=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  --decoders) DECODERS_ONLY=1 ;;
  --fashion-dit) FASHION_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick | --decoders | --fashion-dit]" >&2; exit 2 ;;
esac
DECODER_CASES=/tmp/dit-decoder-cases

main() {
BUNDLE="$ROOT/.bundle"
if [ ! -f "$BUNDLE/jre.tar.gz" ] || [ ! -d "$BUNDLE/lib" ]; then
  echo "no .bundle here: run tools/gpu/make_bundle.sh on the build machine and carry .bundle"
  return 3
fi
DATA="$ROOT"
[ -d "$BUNDLE/data" ] && DATA="$BUNDLE/data"

step "GPU"
nvidia-smi || echo "nvidia-smi failed (rc $?)"
uname -a

step "CUDA libraries on this machine"
LIBS="$(timeout 30 find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
  \( -name 'libcuda.so*' -o -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libnvrtc.so*' \
     -o -name 'libcudart.so*' -o -name 'libcudnn.so*' \) -print 2>/dev/null)"
echo "$LIBS" | head -40
# ONNX Runtime's CUDA execution provider (issue 28, item 3) needs CUDA 12's runtime and cuBLAS and cuDNN 9
# (docs/gpu/README.md, item 8): say whether this machine has them
for so in libcudart.so.12 libcublas.so.12 libcudnn.so.9; do
  echo "$LIBS" | grep -q "/$so" && echo "ONNX Runtime CUDA EP dependency $so: found" \
    || echo "ONNX Runtime CUDA EP dependency $so: missing"
done
# the folders of the versioned cuBLAS and NVRTC libraries, CUDA 13 ones first
DIRS="$({ echo "$LIBS" | grep -E '/lib(cublas|nvrtc)\.so\.13'; echo "$LIBS" | grep -E '/lib(cublas|nvrtc)\.so\.12'; } \
  | grep -v stubs | xargs -r -n1 dirname | awk '!seen[$0]++' | paste -sd: -)"
export DIT_CUDA_LIB_PATH="$DIRS"
export LD_LIBRARY_PATH="${DIRS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "DIT_CUDA_LIB_PATH=$DIT_CUDA_LIB_PATH"
# set to 1, this would make cuBLAS use TF32 even for cuda.precision=fp32 (and fail the 1e-4 parity)
echo "NVIDIA_TF32_OVERRIDE=${NVIDIA_TF32_OVERRIDE:-unset} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"

step "java runtime"
JRE_DIR="$(mktemp -d /tmp/dit-jre.XXXXXX)"
tar -xzf "$BUNDLE/jre.tar.gz" -C "$JRE_DIR"
JAVA=("$JRE_DIR/jre/bin/java" --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Xmx8g
  "-Djava.util.logging.SimpleFormatter.format=%4\$s %3\$s: %5\$s%6\$s%n" -cp "$BUNDLE/lib/*")
"${JAVA[0]}" -version 2>&1

if [ "$FASHION_ONLY" = 1 ]; then
  step "fashion-dit parity checks (CudaParityCheck $ROOT --only fashion-dit)"
  timeout 240 "${JAVA[@]}" io.ditserve.backend.cuda.CudaParityCheck "$ROOT" --only fashion-dit
  PARITY=$?
  echo "CudaParityCheck exit status: $PARITY (0 = all passed, 1 = a check failed, 2 = the backend cannot run)"
  step "benchmark of fashion-dit (CudaBench)"
  timeout 150 "${JAVA[@]}" io.ditserve.backend.cuda.CudaBench --batches 1,8,16 --precisions fp32,tf32,bf16 \
    --warmup 2 --iters 5 --steps 50 "$ROOT/models/fashion-dit"
  echo "CudaBench exit status: $?"
  step "done; parity exit status $PARITY"
  rm -rf "$JRE_DIR"
  return "$PARITY"
fi

step "decoder cases at 256 and 512 px (tools/gpu/make_decoder_cases.py)"
PARITY_ARGS=("$DATA")
if timeout 240 python3 tools/gpu/make_decoder_cases.py "$DECODER_CASES"; then
  PARITY_ARGS+=(--decoder-cases "$DECODER_CASES")
else
  echo "making the decoder cases failed (rc $?): the decoders are checked on the committed fixtures only"
fi
[ "$DECODERS_ONLY" = 1 ] && PARITY_ARGS+=(--decoders-only)

step "parity checks (CudaParityCheck ${PARITY_ARGS[*]})"
timeout 420 "${JAVA[@]}" io.ditserve.backend.cuda.CudaParityCheck "${PARITY_ARGS[@]}"
PARITY=$?
echo "CudaParityCheck exit status: $PARITY (0 = all passed, 1 = a check failed, 2 = the backend cannot run, 124 = timeout)"

if [ "$DECODERS_ONLY" = 0 ]; then

step "random-weight DiT-S/2 and DiT-XL/2 model folders"
BENCH_MODELS=()
# fashion-dit where it travelled with this call (the bundle's data leaves it out: --fashion-dit)
[ -f "$DATA/models/fashion-dit/weights.safetensors" ] && BENCH_MODELS+=("$DATA/models/fashion-dit")
SHAPES=(S XL)
[ "$QUICK" = 1 ] && SHAPES=(S)
for shape in "${SHAPES[@]}"; do
  out="/tmp/dit-bench-$shape"
  if timeout 150 python3 tools/make_bench_model.py "$out" --shape "$shape" --no-onnx; then
    BENCH_MODELS+=("$out")
  else
    echo "making the $shape model failed (rc $?): benchmarking without it"
  fi
done

step "benchmark (CudaBench)"
BENCH_ARGS=(--batches 1,8,16 --precisions fp32,tf32,bf16 --warmup 2 --iters 5 --steps 50)
[ "$QUICK" = 1 ] && BENCH_ARGS=(--batches 1,16 --precisions fp32,tf32,bf16 --warmup 1 --iters 3 --steps 10)
timeout 200 "${JAVA[@]}" io.ditserve.backend.cuda.CudaBench "${BENCH_ARGS[@]}" "${BENCH_MODELS[@]}"
echo "CudaBench exit status: $?"
fi

if [ -f "$DECODER_CASES/vae/config.json" ]; then
  step "decoder benchmark (CudaBench --decoders)"
  DEC_ARGS=(--decoders --latents 32,64 --batches 1,4 --precisions fp32,tf32 --warmup 1 --iters 5)
  [ "$QUICK" = 1 ] && DEC_ARGS=(--decoders --latents 32,64 --batches 1 --precisions fp32,tf32 --warmup 1 --iters 3)
  timeout 150 "${JAVA[@]}" io.ditserve.backend.cuda.CudaBench "${DEC_ARGS[@]}" "$DECODER_CASES/vae" \
    "$DECODER_CASES/taesd"
  echo "CudaBench --decoders exit status: $?"
fi

step "done; parity exit status $PARITY"
rm -rf "$JRE_DIR"
return "$PARITY"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
