#!/usr/bin/env bash
# Installs what the tests and tools need from Debian packages (no PyPI is needed):
# PyTorch 1.13 (reference DiT, training, ONNX export), ONNX, NumPy, Pillow, grpcio (client example),
# OpenBLAS (otherwise torch runs matrix products on the reference BLAS), the Fashion-MNIST dataset, and
# docker-compose (validates the compose file), openssl (TLS test certificates), python3-yaml.
set -euo pipefail
PKGS=(python3-torch python3-onnx python3-numpy python3-pil python3-grpcio python3-protobuf
      libopenblas0-openmp dataset-fashion-mnist docker-compose openssl python3-yaml)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
/usr/bin/python3 -c "import torch, onnx, numpy, PIL; print('python deps ok: torch', torch.__version__, 'onnx', onnx.__version__)"
