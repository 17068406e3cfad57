"""Writes a model folder in the project's format (docs/MODEL_FORMAT.md):

  config.json           constructor arguments, class names, noise schedule, guidance mode, sampler defaults
  weights.safetensors   the state_dict under the released key names, float32 little-endian
  model.onnx            x [N,C,H,W] float32, t [N], y [N] int64, cache_residual [N,T,D] float32,
                        cache_run [M] int64 → out [N,C_out,H,W] float32, cache_residual_out [N,T,D] float32;
                        dynamic N and M (step caching: docs/STEP_CACHE.md). t is the network time as the timestep
                        embedder receives it: int64 in the graphs of format-1 folders (DiT, as before), float32 in
                        those of format-2 folders (config.json format_version 2: every family, docs/MODEL_FAMILIES.md)
  model.onnx.data       the graph's weights, when they are kept outside model.onnx: always for a graph over the
                        2 GB protobuf limit (DiT-XL/2), on request for a smaller one
"""
import json
import os
import warnings
import shutil
import struct

import torch

from . import safetensors_io
from .flow import FLOW_SAMPLERS, PROCESSES, VP_SAMPLERS
from .model import CONSTRUCTOR_ARGS

FORMAT_VERSION = 1
FAMILY_FORMAT_VERSION = 2  # config.json with family, process, qk_norm (docs/MODEL_FAMILIES.md)
ONNX_OPSET = 14  # torch 1.13 exports the parameter-free LayerNorm as primitive ops at 14; 17 fails
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"  # the one external-data file of a graph whose weights are kept outside it
# A protobuf message cannot exceed 2 GiB; graphs whose weights come near it keep them in ONNX_DATA_FILE (the
# margin covers the graph itself and the constants the export folds in).
INLINE_WEIGHT_LIMIT = 1536 << 20


def make_config(model, name, class_names=None, guidance_mode="all", sampler="ddim", steps=50, guidance=4.0,
                eta=0.0, space="pixel", description=""):
    cfg = model.config()
    out = {"format_version": FORMAT_VERSION, "name": name, "description": description}
    out.update({k: cfg[k] for k in CONSTRUCTOR_ARGS})
    out["class_names"] = list(class_names) if class_names else [str(i) for i in range(cfg["num_classes"])]
    if len(out["class_names"]) != cfg["num_classes"]:
        raise ValueError("class_names must have num_classes entries")
    out["schedule"] = {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
                       "respacing": "dit"}
    out["variance"] = "learned_range" if cfg["learn_sigma"] else "fixed_small"
    out["space"] = space  # "pixel": output is the image in [−1, 1]; "latent": SD VAE latent (scale 0.18215)
    out["guidance_mode"] = guidance_mode  # "first3" (released) or "all"
    out["defaults"] = {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta}
    return out


def make_config_v2(model, name, family, class_names=None, guidance_mode="all", sampler=None, steps=None,
                   guidance=None, eta=0.0, guidance_interval=None, timestep_shift=1.0, space="latent",
                   description=""):
    """config.json format_version 2 (docs/MODEL_FAMILIES.md): every key of format 1, plus family, process and
    qk_norm. A flow family (sit, repa) has no schedule/variance, learn_sigma false and flow samplers; its defaults
    hold guidance_interval ([lo, hi] in the network's time, when given) and timestep_shift (when not 1), no eta.
    family dit keeps schedule, variance and eta and takes the VP samplers."""
    if family not in PROCESSES:
        raise ValueError(f"family must be one of {sorted(PROCESSES)}, got {family!r}")
    cfg = model.config()
    flow = family != "dit"
    if flow and cfg["learn_sigma"]:
        raise ValueError("a flow model has no learned σ: drop the σ half of final_layer.linear first")
    allowed = FLOW_SAMPLERS if flow else VP_SAMPLERS
    if sampler not in allowed:
        raise ValueError(f"sampler {sampler!r} does not fit a {family} model: it takes {', '.join(allowed)}")
    if guidance_mode not in ("first3", "all"):
        raise ValueError(f"guidance_mode must be first3 or all, got {guidance_mode!r}")
    out = {"format_version": FAMILY_FORMAT_VERSION, "name": name, "description": description, "family": family,
           "process": dict(PROCESSES[family])}
    out.update({k: cfg[k] for k in CONSTRUCTOR_ARGS})
    out["qk_norm"] = bool(cfg.get("qk_norm", False))
    out["class_names"] = list(class_names) if class_names else [str(i) for i in range(cfg["num_classes"])]
    if len(out["class_names"]) != cfg["num_classes"]:
        raise ValueError("class_names must have num_classes entries")
    if not flow:
        out["schedule"] = {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
                           "respacing": "dit"}
        out["variance"] = "learned_range" if cfg["learn_sigma"] else "fixed_small"
    out["space"] = space
    out["guidance_mode"] = guidance_mode
    defaults = {"sampler": sampler, "steps": steps, "guidance": guidance}
    if not flow:
        defaults["eta"] = eta
    if guidance_interval is not None:
        lo, hi = (float(v) for v in guidance_interval)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval must be [lo, hi] with 0 ≤ lo ≤ hi ≤ 1, got {guidance_interval}")
        defaults["guidance_interval"] = [lo, hi]
    if timestep_shift is not None and float(timestep_shift) != 1.0:
        if not float(timestep_shift) > 0.0:
            raise ValueError(f"timestep_shift must be > 0, got {timestep_shift}")
        defaults["timestep_shift"] = float(timestep_shift)
    out["defaults"] = defaults
    return out


# The graph's I/O (docs/MODEL_FORMAT.md): DiT(x, t, y) with step caching (docs/STEP_CACHE.md): the samples listed
# in cache_run run blocks 1..depth−1 and return their residual; the others reuse cache_residual.
INPUTS = ("x", "t", "y", "cache_residual", "cache_run")
OUTPUTS = ("out", "cache_residual_out")


class _CachedForward(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, y, cache_residual, cache_run):
        return self.model.forward_cached(x, t, y, cache_residual, cache_run)


def export_onnx(model, path, batch=3, external_data=None, float_time=False):
    """Exports the I/O contract graph to `path`. float_time: t is float32 [N] (format-2 folders) instead of int64
    [N] (format 1). external_data: True keeps every weight over 1 KiB in one file
    beside it (ONNX_DATA_FILE, referenced by that relative name), False keeps them inside, None (default) decides
    by size (INLINE_WEIGHT_LIMIT). Returns whether the weights went to ONNX_DATA_FILE. The folder of `path` gets
    no other file: torch writes a >2 GB graph as one loose file per tensor, so the export goes to a scratch
    folder first and is re-saved from there."""
    import onnx
    cfg = model.config()
    model = model.eval()
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in model.state_dict().values()) > INLINE_WEIGHT_LIMIT
    x = torch.randn(batch, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    if float_time:
        t = torch.tensor([0.25 * (i + 1) for i in range(batch)], dtype=torch.float32)
    else:
        t = torch.tensor([10 * (i + 1) for i in range(batch)], dtype=torch.long)
    y = torch.tensor([i % cfg["num_classes"] for i in range(batch)], dtype=torch.long)
    dyn = {"x": {0: "N"}, "t": {0: "N"}, "y": {0: "N"}, "cache_residual": {0: "N"}, "cache_run": {0: "M"},
           "out": {0: "N"}, "cache_residual_out": {0: "N"}}
    folder = os.path.dirname(os.path.abspath(path))
    data_path = os.path.join(folder, ONNX_DATA_FILE)
    for stale in (path, data_path):  # onnx appends to an existing data file
        if os.path.lexists(stale):
            os.remove(stale)
    scratch = os.path.join(folder, ".onnx-export")
    os.makedirs(scratch)
    try:
        raw = os.path.join(scratch, ONNX_FILE) if external_data else path
        tokens = (cfg["input_size"] // cfg["patch_size"]) ** 2
        residual = torch.randn(batch, tokens, cfg["hidden_size"])
        run = torch.arange(batch - 1, dtype=torch.long)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(_CachedForward(model), (x, t, y, residual, run), raw, input_names=list(INPUTS),
                              output_names=list(OUTPUTS), dynamic_axes=dyn, opset_version=ONNX_OPSET,
                              do_constant_folding=True)
        if external_data:
            graph = onnx.load(raw)  # with the loose tensor files torch may have written beside it
            onnx.save_model(graph, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=ONNX_DATA_FILE, size_threshold=1024)
            del graph
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    check_onnx(path)
    return external_data


def check_onnx(path):
    """The ONNX checker on the file (so that a graph with external data is checked with it), the I/O names, and
    every external tensor inside ONNX_DATA_FILE beside it. Returns the data file's size, 0 when there is none."""
    import onnx
    onnx.checker.check_model(path)
    graph = onnx.load(path, load_external_data=False)
    names = ([i.name for i in graph.graph.input], [o.name for o in graph.graph.output])
    if names != (list(INPUTS), list(OUTPUTS)):
        raise ValueError(f"{path}: inputs/outputs {names}, expected {(list(INPUTS), list(OUTPUTS))}")
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), ONNX_DATA_FILE)
    size = os.path.getsize(data_path) if os.path.exists(data_path) else 0
    for tensor in graph.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        end = int(info.get("offset", 0)) + int(info.get("length", -1))
        if info.get("location") != ONNX_DATA_FILE or "length" not in info or end > size:
            raise ValueError(f"{path}: initializer {tensor.name} points at {info}, outside {ONNX_DATA_FILE} "
                             f"({size} bytes)")
    return size


def check_safetensors(path, state_dict):
    """The written header names exactly these tensors, with their shapes, and the data ends where the file does."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
    header.pop("__metadata__", None)
    if set(header) != set(state_dict):
        raise ValueError(f"{path}: tensors {sorted(set(header) ^ set(state_dict))[:8]} differ from the model's")
    for k, v in state_dict.items():
        if header[k]["shape"] != list(v.shape):
            raise ValueError(f"{path}: {k} has shape {header[k]['shape']}, expected {list(v.shape)}")
    end = max((h["data_offsets"][1] for h in header.values()), default=0)
    if 8 + n + end != os.path.getsize(path):
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes, the header describes {8 + n + end}")


def write_model_folder(model, out_dir, config, onnx=True, onnx_external_data=None):
    """Writes config.json, weights.safetensors and (onnx) model.onnx (+ model.onnx.data, see export_onnx) into
    out_dir and checks each file after writing it. Writes into out_dir as it is: callers that publish a folder
    write into tools/dit/vae.staged_folder. Returns {file name: size in bytes} of what it wrote."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "config.json")) as f:
        json.load(f)
    sd = {k: v.float() for k, v in model.state_dict().items()}
    weights = os.path.join(out_dir, "weights.safetensors")
    safetensors_io.write(weights, sd, {"format": "pt", "model": config["name"]})
    check_safetensors(weights, sd)
    del sd
    names = ["config.json", "weights.safetensors"]
    if onnx:
        names.append(ONNX_FILE)
        float_time = config.get("format_version", FORMAT_VERSION) >= FAMILY_FORMAT_VERSION
        if export_onnx(model, os.path.join(out_dir, ONNX_FILE), external_data=onnx_external_data,
                       float_time=float_time):
            names.append(ONNX_DATA_FILE)
    return {n: os.path.getsize(os.path.join(out_dir, n)) for n in names}
