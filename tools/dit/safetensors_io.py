"""Minimal safetensors reader/writer (Debian has no safetensors package). Format: 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, padded with
spaces to a multiple of 8, then the raw little-endian tensor bytes."""
import json
import struct

import numpy as np
import torch

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "BF16": None}


def write(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr = tensors[name].detach().cpu().contiguous().numpy() if torch.is_tensor(tensors[name]) else tensors[name]
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float32:
            dt = "F32"
        elif arr.dtype == np.int64:
            dt = "I64"
        elif arr.dtype == np.float16:
            dt = "F16"
        elif arr.dtype == np.float64:
            dt = "F64"
        else:
            raise ValueError(f"unsupported dtype {arr.dtype} for {name}")
        b = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read(path):
    """Returns (dict name → torch tensor, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} exceeds file size {len(data)}")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dt = info["dtype"]
        if dt == "BF16":
            raw = np.frombuffer(data, dtype="<u2", count=(end - begin) // 2, offset=base + begin)
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            np_dt = np.dtype(_DTYPES[dt]).newbyteorder("<")
            arr = np.frombuffer(data, dtype=np_dt, count=(end - begin) // np_dt.itemsize, offset=base + begin)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).astype(arr.dtype.newbyteorder("=")).copy())
    return out, meta
