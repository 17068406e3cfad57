#!/usr/bin/env bash
# Installs what the Python tests and tools need from Debian packages (no PyPI is needed): the groups `python` and
# `packaging` of tools/packages.txt (PyTorch 1.13, ONNX, NumPy, Pillow, grpcio, OpenBLAS, Fashion-MNIST,
# docker-compose, openssl, ...), then checks that they import.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/install-packages.sh" python packaging
/usr/bin/python3 -c "import torch, onnx, numpy, PIL; print('python deps ok: torch', torch.__version__, 'onnx', onnx.__version__)"
