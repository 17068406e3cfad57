#!/usr/bin/env bash
# Builds .bundle/ (git-ignored): what tools/gpu/run_cuda_checks.sh needs on a GPU machine that has no JDK and no
# Maven. Run here, then carry .bundle to the GPU machine:
#
#   tools/gpu/make_bundle.sh [--with-data]
#
#   .bundle/jre.tar.gz   a jlink-ed Java 25 runtime (java.base, java.logging, jdk.incubator.vector), gzipped:
#                        the device tool moves files as they are, and the runtime is half the size packed
#   .bundle/lib/         backend-api, backend-java, backend-cuda and their dependencies (Jackson); backend-testkit
#                        (the fixture readers); ditserve-backend-cuda-gpu-checks.jar: the cuda module's compiled
#                        TEST classes, where the check and bench programs live (CudaParityCheck, CudaBench; they are
#                        not in the backend's jar). JUnit and AssertJ are not needed by the programs and not packed.
#   .bundle/data/        only with --with-data: tools/fixtures (config, weights and cases of the four DiT fixture
#                        models pixel-tiny, latent-tiny, sit-tiny and repa-tiny, the three small decoder folders,
#                        the SD3 MMDiT and text encoder folders), laid out like the repository; 18 MB. Not
#                        models/fashion-dit (30 MB): the checks of that model run in a call of their own
#                        (run_cuda_checks.sh --fashion-dit), which reads it from the working tree
#
# The device tool sends the working tree with every call and refuses more than 64 MiB, carried paths included;
# the repository's tracked files are about 150 MB (the bundled models, the fixtures). So a GPU session makes the
# bundle with --with-data and leaves the big folders out of the working tree for its calls with
# tools/gpu/slim_tree.sh (docs/gpu/README.md, "Carrying the checks").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WITH_DATA=0
case "${1:-}" in
  --with-data) WITH_DATA=1 ;;
  "") ;;
  *) echo "usage: $0 [--with-data]" >&2; exit 2 ;;
esac
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
BUNDLE="$ROOT/.bundle"

echo "== build (backend-api, backend-testkit, backend-java, backend-cuda; tests compiled, not run)"
MVN_ARGS=(-B -q -pl backends/cuda -am package -DskipTests)
mvn -o "${MVN_ARGS[@]}" || mvn "${MVN_ARGS[@]}"

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/lib"
echo "== jars"
mvn -B -q -o -pl backends/cuda dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$BUNDLE/lib" \
  || mvn -B -q -pl backends/cuda dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$BUNDLE/lib"
# the project's own jars from this build (copy-dependencies takes them from the local repository, which may hold
# older ones)
cp backends/api/target/ditserve-backend-api-*.jar backends/java/target/ditserve-backend-java-*.jar \
  backends/cuda/target/ditserve-backend-cuda-*.jar backends/testkit/target/ditserve-backend-testkit-*.jar \
  "$BUNDLE/lib/"
rm -f "$BUNDLE"/lib/*-sources.jar "$BUNDLE"/lib/*-tests.jar
# the GPU check and bench programs are test sources (backends/cuda/src/test/java): pack their classes
"$JAVA_HOME/bin/jar" --create --file "$BUNDLE/lib/ditserve-backend-cuda-gpu-checks.jar" \
  -C backends/cuda/target/test-classes io
ls "$BUNDLE/lib"

echo "== java runtime (jlink)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$JAVA_HOME/bin/jlink" --add-modules java.base,java.logging,jdk.incubator.vector \
  --strip-debug --no-header-files --no-man-pages --compress=zip-6 --output "$TMP/jre" 2>&1 \
  | grep -v "Using incubator modules" || true
"$TMP/jre/bin/java" -version 2>&1 | head -1
tar -C "$TMP" -czf "$BUNDLE/jre.tar.gz" jre

if [ "$WITH_DATA" = 1 ]; then
  echo "== data"
  for m in vae-small vae-small-legacy taesd-small; do
    mkdir -p "$BUNDLE/data/tools/fixtures/$m"
    cp "tools/fixtures/$m/config.json" "tools/fixtures/$m/diffusion_pytorch_model.safetensors" \
      "tools/fixtures/$m/cases.safetensors" "$BUNDLE/data/tools/fixtures/$m/"
  done
  for m in pixel-tiny latent-tiny sit-tiny repa-tiny; do
    mkdir -p "$BUNDLE/data/tools/fixtures/$m"
    cp "tools/fixtures/$m/config.json" "tools/fixtures/$m/weights.safetensors" "tools/fixtures/$m/cases.safetensors" \
      "$BUNDLE/data/tools/fixtures/$m/"
  done
  # SD3's MMDiT and text encoder fixtures (CudaParityCheck.textChecks): config, weights or shards and index, cases
  for m in mmdit-tiny mmdit-x-tiny clip-tiny clip-tiny-g t5-tiny; do
    mkdir -p "$BUNDLE/data/tools/fixtures/$m"
    cp tools/fixtures/$m/*.json tools/fixtures/$m/*.safetensors "$BUNDLE/data/tools/fixtures/$m/"
  done
fi

echo "== .bundle: $(du -sh "$BUNDLE" | cut -f1)"
du -sh "$BUNDLE"/* | sed 's/^/   /'
