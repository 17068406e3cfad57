#!/usr/bin/env bash
# The full test suite, run by `./dit test` and CI on a fresh machine:
#   1. Python reference tests (installs Debian's python3-torch & co. with apt if missing)
#   2. Java build and tests (Maven; unit, in-process gRPC, parity with the PyTorch fixtures)
#   3. packaging checks (docker-compose config; no Docker engine needed); the Kubernetes manifests of deploy/k8s/
#      against the Kubernetes schemas (tools/k8s/validate.mjs: kubernetes-models from npm, unknown fields refused)
#   4. end-to-end: `./dit serve` as a process, `./dit generate` and the Python client against it
#   5. a real load balancer: nginx in front of two replicas (tools/lb_test.sh; installs Debian's nginx if missing)
#   6. containers: the image built and run with podman, the compose topology with podman-compose
#      (tools/container_test.sh; installs podman & co. if missing; skips only where podman cannot run)
# `./dit test --fresh` instead runs tools/fresh_test.sh: the README's commands (this suite included) in a fresh
# Debian root made with mmdebstrap from a clean clone of HEAD, with only what a new machine has.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-}" = --fresh ]; then shift; exec bash tools/fresh_test.sh "$@"; fi

echo "== python reference tests"
bash tools/setup-deps.sh
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} /usr/bin/python3 -m unittest discover -s tools/tests -v 2>&1 \
  | grep -v -E "TracerWarning|^  (if|h = w)" 

echo "== real-shape decoder fixtures for the Java tests (skipped when up to date)"
/usr/bin/python3 tools/make_decoder_fixtures.py --real target/decoder-fixtures

echo "== latent-tiny converted with its ONNX weights in model.onnx.data (the >2 GB form), for the onnx tests"
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} /usr/bin/python3 tools/convert.py \
  tools/fixtures/latent-tiny/weights.safetensors target/onnx-external-data/latent-tiny --num-heads 3 \
  --onnx-external-data 2>&1 | grep -v -E "TracerWarning|^  (if|h = w)"

echo "== java build and tests"
JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
export JAVA_HOME
mvn -B install
touch server/target/.dit-built

echo "== packaging: docker-compose.yml, deploy/compose-nginx.yml and the Envoy config parse"
docker-compose -f docker-compose.yml config -q
docker-compose -f deploy/compose-nginx.yml config -q
/usr/bin/python3 -c "import yaml; yaml.safe_load(open('deploy/envoy.yaml'))"
echo "docker-compose config ok"

echo "== kubernetes manifests: deploy/k8s/ against the Kubernetes schemas, no unknown fields (tools/k8s)"
command -v node > /dev/null && command -v npm > /dev/null \
  || { echo "node and npm are needed (a new machine has Node.js 20 and npm)" >&2; exit 1; }
# npm ci from the lock file when it changed since the last install (kubernetes-models 5.1.0 declares Node >= 22 and
# runs on Node 20: --loglevel=error hides that warning)
if ! cmp -s tools/k8s/package-lock.json tools/k8s/node_modules/.ditserve-installed-lock 2> /dev/null; then
  (cd tools/k8s && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.ditserve-installed-lock)
fi
node tools/k8s/validate.mjs

echo "== web port: the page in chromium via chromium-driver (selenium-webdriver), the OpenAI Images API with the openai client (tools/web_test.sh)"
bash tools/web_test.sh
echo "== end-to-end: ./dit serve + ./dit generate + Python client"
bash tools/e2e.sh
echo "== load balancer: nginx (grpc_pass, deploy/nginx-grpc.conf) in front of two ./dit serve replicas"
bash tools/lb_test.sh
echo "== containers: Dockerfile image with podman, deploy/compose-nginx.yml with podman-compose (tools/container_test.sh)"
bash tools/container_test.sh
echo "== all tests passed"
