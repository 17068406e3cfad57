"""Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files, gzip)."""
import gzip
import os
import struct

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {dims} values, found {arr.size}")
    return arr.reshape(dims)


def load(split="train", directory=None):
    """Returns (images uint8 [N, 28, 28], labels int64 [N])."""
    d = directory or os.environ.get("FASHION_MNIST_DIR", DEFAULT_DIR)
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    return images, labels


def to_model_range(images_uint8):
    """uint8 [N, 28, 28] → float32 [N, 1, 28, 28] in [−1, 1]."""
    return (images_uint8.astype(np.float32) / 127.5 - 1.0)[:, None]
