#!/usr/bin/env bash
# Load time of the onnx backend's graphs built at load, without and with the graph cache (docs/TEXT_MODELS.md, "The
# graph cache"): io.ditserve.backend.onnx.GraphCacheBench in a fresh JVM per run, as a server starts. For each
# folder (a pipeline: its transformer, text encoders and vae; or one AutoencoderKL folder): REPEAT runs with
# onnx.graph_cache=off, then per cache mode an empty cache folder, one run that builds and writes (miss), REPEAT
# runs that read (hit), and the cache folder's size.
#
#   tools/bench_graph_cache.sh DIR [DIR ...]
#   env: THREADS (2), MODES ("on optimized"), OPTIMIZATION (all: onnx.optimization), REPEAT (3)
#
# A folder to measure on: tools/pipeline-fixtures/sd3-tiny-full (committed), target/decoder-fixtures/vae
# (tools/make_decoder_fixtures.py --real target/decoder-fixtures: the SD VAE decoder's shapes, 0.4 GB of F32), or
# /tmp/w/sd3-mid (tools/sd3/make_shaped_sd3.py --out /tmp/w/sd3-mid --size mid: SD3's structure, 0.68 GB of BF16).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THREADS=${THREADS:-2}
MODES=${MODES:-on optimized}
OPTIMIZATION=${OPTIMIZATION:-all}
REPEAT=${REPEAT:-3}
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
[ $# -ge 1 ] || { echo "usage: tools/bench_graph_cache.sh DIR [DIR ...]" >&2; exit 2; }

source "$ROOT/tools/onnx_bench_env.sh"
onnx_bench_build
CP="$ONNX_BENCH_CP"
JVM=("${ONNX_BENCH_JVM[@]}" -Xmx2g)
run() { "${JVM[@]}" -cp "$CP" io.ditserve.backend.onnx.GraphCacheBench "$@" 2>&1 \
  | grep -v -E "^WARNING|^INFO|^[A-Z][a-z]{2} [0-9]{2}, [0-9]{4} |\[W:onnxruntime" || true; }

for DIR in "$@"; do
  echo "== $DIR ($(du -sh "$DIR" | cut -f1)), $THREADS threads, onnx.optimization=$OPTIMIZATION"
  for i in $(seq "$REPEAT"); do
    echo "-- onnx.graph_cache=off, run $i"
    run "$DIR" "$THREADS" onnx.optimization="$OPTIMIZATION" onnx.graph_cache=off
  done
  for mode in $MODES; do
    CACHE="$(mktemp -d)"
    echo "-- onnx.graph_cache=$mode, empty cache: build and write"
    run "$DIR" "$THREADS" onnx.optimization="$OPTIMIZATION" onnx.graph_cache="$mode" onnx.graph_cache_dir="$CACHE"
    for i in $(seq "$REPEAT"); do
      echo "-- onnx.graph_cache=$mode, from the cache, run $i"
      run "$DIR" "$THREADS" onnx.optimization="$OPTIMIZATION" onnx.graph_cache="$mode" onnx.graph_cache_dir="$CACHE"
    done
    echo "   cache folder: $(du -sh "$CACHE" | cut -f1)"
    rm -rf "$CACHE"
  done
done
