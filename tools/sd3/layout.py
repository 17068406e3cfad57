"""Writes and reads a diffusers StableDiffusion3Pipeline folder, in the layout diffusers/transformers save:

  model_index.json                      {"_class_name": "StableDiffusion3Pipeline", component: [library, class], …};
                                        an absent component is [null, null]
  transformer/config.json               SD3Transformer2DModel keys (tools/sd3/mmdit.py)
  transformer/diffusion_pytorch_model.safetensors
      or diffusion_pytorch_model-0000i-of-0000n.safetensors + diffusion_pytorch_model.safetensors.index.json
  text_encoder/, text_encoder_2/        config.json (CLIPTextConfig) + model.safetensors (or model-…-of-… + index)
  tokenizer/, tokenizer_2/              vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
  scheduler/scheduler_config.json       FlowMatchEulerDiscreteScheduler
  text_encoder_3/, tokenizer_3/         optional T5: config.json (T5Config, architectures T5EncoderModel) +
                                        model.safetensors (or shards); spiece.model, special_tokens_map.json,
                                        tokenizer_config.json (no tokenizer.json: the Java reader takes spiece.model)
  vae/                                  AutoencoderKL: config.json + diffusion_pytorch_model.safetensors (the decoder's
                                        tensors and a few encoder ones, as a real autoencoder file has); absent for a
                                        pixel-space model
  ditserve.json                         ours, not diffusers': what the folder itself cannot say (see below)

Sharded files follow the Hugging Face convention: ``<base>-00001-of-00003.safetensors`` and
``<base>.safetensors.index.json`` = {"metadata": {"total_size": bytes of tensor data}, "weight_map": {name: file}}.
Weights in F32, F16 or BF16 (BF16 rounded to nearest even from fp32); the safetensors header carries
{"format": "pt"} as both libraries write it. Reading converts everything to fp32 (the reference computes in fp32).

ditserve.json holds defaults a diffusers folder has no place for: ``max_sequence_length`` (the T5 part of the
context; diffusers' pipeline argument, default 256; 0 for a model trained without T5), ``guidance_scale``,
``num_inference_steps``, ``negative_prompt`` and ``pixel_space`` (true: no VAE, the sample is the image in [−1, 1];
diffusers itself cannot run such a folder — its pipeline always decodes with a VAE).
"""
import json
import os
import shutil
import struct

import numpy as np
import torch

from . import clip_bpe, clip_text, mmdit, t5_encoder, t5_tokenizer
from . import pipeline as sd3pipe
from . import scheduler as sched

PIPELINE_CLASS = "StableDiffusion3Pipeline"
COMPONENTS = ("scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
              "tokenizer_3", "transformer", "vae")
LIBRARY_CLASS = {
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_3": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "tokenizer_3": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "SD3Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS = "model"
DTYPES = {"fp32": "F32", "fp16": "F16", "bf16": "BF16", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}
TORCH_DTYPE_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


# ---------------------------------------------------------------------------------------------------------------
# safetensors with F32/F16/BF16 and shards

def _bf16_bits(arr32):
    """fp32 → bf16 bit patterns, round to nearest even (NaN stays NaN)."""
    bits = arr32.astype(np.float32).view(np.uint32)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(arr32)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def tensor_bytes(t, st_dtype):
    a = t.detach().cpu().float().contiguous().numpy()
    if st_dtype == "F32":
        return a.astype("<f4").tobytes()
    if st_dtype == "F16":
        return a.astype("<f2").tobytes()
    if st_dtype == "BF16":
        return _bf16_bits(a).astype("<u2").tobytes()
    raise ValueError(f"unsupported dtype {st_dtype}, known: F32, F16, BF16")


def write_safetensors(path, tensors, st_dtype="F32", metadata=None):
    """tensors: name → torch tensor (floating; int64 kept as I64). Names sorted, as safetensors writes them."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype in (torch.int64, torch.int32):
            dt, b = ("I64", t.cpu().numpy().astype("<i8").tobytes())
        else:
            dt, b = st_dtype, tensor_bytes(t, st_dtype)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    return offset


def read_safetensors(path):
    """(name → fp32 torch tensor (int64 kept), {name: stored dtype}). Validates the header against the file size."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    base = 8 + n
    out, dtypes = {}, {}
    np_of = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dt = info["dtype"]
        if dt not in np_of:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dt}")
        if not 0 <= begin <= end <= len(data) - base:
            raise ValueError(f"{path}: tensor {name} lies outside the file")
        count = int(np.prod(info["shape"], dtype=np.int64))
        if (end - begin) != count * np.dtype(np_of[dt]).itemsize:
            raise ValueError(f"{path}: tensor {name} has {end - begin} bytes for shape {info['shape']} {dt}")
        arr = np.frombuffer(data, dtype=np_of[dt], count=count, offset=base + begin)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dt in ("I64", "I32"):
            arr = arr.astype(np.int64)
        else:
            arr = arr.astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
        dtypes[name] = dt
    return out, dtypes


def write_weights(folder, base, state, dtype="fp32", shard_bytes=None):
    """Writes <base>.safetensors, or shards of at most shard_bytes tensor bytes (tensors kept whole, in name
    order) with <base>.safetensors.index.json. Returns the list of files written."""
    st = DTYPES[dtype]
    state = {k: v for k, v in state.items()}
    names = sorted(state)
    elem = {"F32": 4, "F16": 2, "BF16": 2}[st]
    sizes = {k: state[k].numel() * (8 if state[k].dtype == torch.int64 else elem) for k in names}
    if not shard_bytes or sum(sizes.values()) <= shard_bytes:
        path = os.path.join(folder, f"{base}.safetensors")
        write_safetensors(path, state, st)
        return [path]
    shards, cur, cur_size = [], [], 0
    for k in names:
        if cur and cur_size + sizes[k] > shard_bytes:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append(k)
        cur_size += sizes[k]
    shards.append(cur)
    weight_map, files = {}, []
    for i, keys in enumerate(shards):
        fname = f"{base}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(folder, fname), {k: state[k] for k in keys}, st)
        files.append(os.path.join(folder, fname))
        weight_map.update({k: fname for k in keys})
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(folder, f"{base}.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return files + [os.path.join(folder, f"{base}.safetensors.index.json")]


def read_weights(folder, base):
    """(state, {name: dtype}) from <base>.safetensors or its sharded form (every index entry must be in its
    shard, and every shard tensor in the index)."""
    single = os.path.join(folder, f"{base}.safetensors")
    index_path = os.path.join(folder, f"{base}.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if not os.path.exists(index_path):
        raise FileNotFoundError(f"{folder}: neither {base}.safetensors nor {base}.safetensors.index.json")
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    state, dtypes = {}, {}
    for fname in sorted(set(weight_map.values())):
        part, dt = read_safetensors(os.path.join(folder, fname))
        for k in part:
            if weight_map.get(k) != fname:
                raise ValueError(f"{folder}/{fname}: tensor {k} is not mapped to this shard in the index")
        state.update(part)
        dtypes.update(dt)
    missing = set(weight_map) - set(state)
    if missing:
        raise ValueError(f"{index_path}: {len(missing)} indexed tensors missing from the shards, e.g. {min(missing)}")
    return state, dtypes


# ---------------------------------------------------------------------------------------------------------------
# Components

def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _replace_dir(tmp, final):
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_transformer(folder, model, dtype="fp32", shard_bytes=None):
    os.makedirs(folder, exist_ok=True)
    _write_json(os.path.join(folder, "config.json"), model.config_json())
    return write_weights(folder, DIFFUSERS_WEIGHTS, model.state_dict(), dtype, shard_bytes)


def write_clip(folder, model, dtype="fp32", shard_bytes=None):
    os.makedirs(folder, exist_ok=True)
    _write_json(os.path.join(folder, "config.json"), model.config_json(TORCH_DTYPE_NAME[DTYPES[dtype]]))
    return write_weights(folder, TRANSFORMERS_WEIGHTS, model.state_dict(), dtype, shard_bytes)


def read_transformer(folder):
    cfg = _read_json(os.path.join(folder, "config.json"))
    if cfg.get("_class_name") != mmdit.CLASS_NAME:
        raise ValueError(f"{folder}/config.json: _class_name {cfg.get('_class_name')!r}, expected {mmdit.CLASS_NAME}")
    keys = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = mmdit.SD3Transformer2DModel(**{**mmdit.CONFIG_DEFAULTS, **keys})
    state, dtypes = read_weights(folder, DIFFUSERS_WEIGHTS)
    model.load_state_dict(state, strict=True)
    return model.eval(), dtypes


def read_clip(folder):
    cfg = _read_json(os.path.join(folder, "config.json"))
    arch = cfg.get("architectures") or ["CLIPTextModelWithProjection"]
    if arch[0] != "CLIPTextModelWithProjection":
        raise ValueError(f"{folder}/config.json: architecture {arch[0]!r}, expected CLIPTextModelWithProjection")
    model = clip_text.CLIPTextModelWithProjection(**cfg)
    state, dtypes = read_weights(folder, TRANSFORMERS_WEIGHTS)
    clip_text.load_weights(model, state)
    return model.eval(), dtypes


def write_t5(folder, model, dtype="fp32", shard_bytes=None):
    """transformers' layout: config.json and shared.weight without its tied copy encoder.embed_tokens.weight."""
    os.makedirs(folder, exist_ok=True)
    _write_json(os.path.join(folder, "config.json"), model.config_json(TORCH_DTYPE_NAME[DTYPES[dtype]]))
    return write_weights(folder, TRANSFORMERS_WEIGHTS, model.state_dict(), dtype, shard_bytes)


def read_t5(folder):
    cfg = _read_json(os.path.join(folder, "config.json"))
    arch = cfg.get("architectures") or ["T5EncoderModel"]
    if arch[0] != "T5EncoderModel":
        raise ValueError(f"{folder}/config.json: architecture {arch[0]!r}, expected T5EncoderModel")
    model = t5_encoder.T5EncoderModel(**cfg)
    state, dtypes = read_weights(folder, TRANSFORMERS_WEIGHTS)
    t5_encoder.load_weights(model, state)
    return model.eval(), dtypes


def write_vae(folder, decoder, config):
    """An AutoencoderKL folder: config.json (config plus _class_name/_diffusers_version) and
    diffusion_pytorch_model.safetensors in F32 with the decoder's tensors and two encoder ones (ignored by every
    reader, present because a released autoencoder file has its encoder; quant_conv only when use_quant_conv)."""
    from tools.dit import vae as vae_ref
    os.makedirs(folder, exist_ok=True)
    cfg = {"_class_name": "AutoencoderKL", "_diffusers_version": vae_ref.DIFFUSERS_VERSION, **config}
    _write_json(os.path.join(folder, "config.json"), cfg)
    state = {k: v.detach().float() for k, v in decoder.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    c0 = decoder.config["block_out_channels"][0]
    state["encoder.conv_in.weight"] = 0.1 * torch.randn((c0, 3, 3, 3), generator=g)
    state["encoder.conv_in.bias"] = torch.zeros(c0)
    if cfg.get("use_quant_conv", True):
        lat = 2 * decoder.latent_channels
        state["quant_conv.weight"] = 0.1 * torch.randn((lat, lat, 1, 1), generator=g)
        state["quant_conv.bias"] = torch.zeros(lat)
    write_safetensors(os.path.join(folder, f"{DIFFUSERS_WEIGHTS}.safetensors"), state, "F32")


def read_vae(folder):
    """tools/dit/vae.py's FullDecoder of the folder (float32, eval)."""
    from tools.dit import vae as vae_ref
    return vae_ref.load_decoder(folder)


def write_pipeline(out, pipe, dtype="fp32", shard_bytes=None, ditserve=None, t5_dtype=None):
    """Writes the folder of an in-memory sd3 Pipeline. Each component is written to a temporary sibling folder
    and swapped in, so a crash leaves the old component or the new one; other files in `out` (a README, images)
    are kept. t5_dtype: the T5's weights (default: dtype; SD3 ships its T5 in fp16). Returns `out`."""
    os.makedirs(out, exist_ok=True)
    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": mmdit.DIFFUSERS_VERSION}
    present = {"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer"}
    if pipe.text_encoder_3 is not None:
        present |= {"text_encoder_3", "tokenizer_3"}
    if pipe.vae is not None:
        present.add("vae")
    for comp in COMPONENTS:
        index[comp] = LIBRARY_CLASS[comp] if comp in present else [None, None]
    writers = {
        "transformer": lambda d: write_transformer(d, pipe.transformer, dtype, shard_bytes),
        "text_encoder": lambda d: write_clip(d, pipe.text_encoder, dtype, shard_bytes),
        "text_encoder_2": lambda d: write_clip(d, pipe.text_encoder_2, dtype, shard_bytes),
        "tokenizer": lambda d: pipe.tokenizer.save(d),
        "tokenizer_2": lambda d: pipe.tokenizer_2.save(d),
        "scheduler": lambda d: (os.makedirs(d, exist_ok=True),
                                _write_json(os.path.join(d, "scheduler_config.json"), pipe.scheduler_config)),
    }
    if pipe.text_encoder_3 is not None:
        writers["text_encoder_3"] = lambda d: write_t5(d, pipe.text_encoder_3, t5_dtype or dtype, shard_bytes)
        writers["tokenizer_3"] = lambda d: pipe.tokenizer_3.save(d)
    if pipe.vae is not None:
        writers["vae"] = lambda d: write_vae(d, pipe.vae, pipe.vae_config)
    for comp, write in writers.items():
        tmp = os.path.join(out, f".{comp}.tmp")
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        write(tmp)
        _replace_dir(tmp, os.path.join(out, comp))
    for comp in ("text_encoder_3", "tokenizer_3", "vae"):
        if comp not in present and os.path.exists(os.path.join(out, comp)):
            shutil.rmtree(os.path.join(out, comp))
    _write_json(os.path.join(out, "model_index.json"), index)
    d = pipe.defaults
    serve = {"max_sequence_length": pipe.max_sequence_length,
             "guidance_scale": d.get("guidance_scale", 7.0),
             "num_inference_steps": d.get("num_inference_steps", 28),
             "negative_prompt": d.get("negative_prompt", ""),
             "pixel_space": pipe.vae is None,
             **(ditserve or {})}
    _write_json(os.path.join(out, "ditserve.json"), serve)
    return out


def load_pipeline(path, drop_t5=False):
    """An sd3 Pipeline from a folder written by write_pipeline or downloaded from the hub: CLIPs, the T5 when
    text_encoder_3 is there (drop_t5: left out, as diffusers' ``text_encoder_3=None``; its context part is then
    zeros), the VAE when vae/ is there (else ditserve.json must say pixel_space)."""
    index = _read_json(os.path.join(path, "model_index.json"))
    if index.get("_class_name") != PIPELINE_CLASS:
        raise ValueError(f"{path}/model_index.json: _class_name {index.get('_class_name')!r}, expected {PIPELINE_CLASS}")

    def has(comp):
        entry = index.get(comp)
        return bool(entry) and entry[0] is not None and os.path.isdir(os.path.join(path, comp))

    if has("text_encoder_3") != has("tokenizer_3"):
        raise ValueError(f"{path}: text_encoder_3 and tokenizer_3 come together")
    for comp in ("transformer", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        if not has(comp):
            raise FileNotFoundError(f"{path}: component {comp} missing")
    serve_path = os.path.join(path, "ditserve.json")
    serve = _read_json(serve_path) if os.path.exists(serve_path) else {}
    transformer, _ = read_transformer(os.path.join(path, "transformer"))
    te1, _ = read_clip(os.path.join(path, "text_encoder"))
    te2, _ = read_clip(os.path.join(path, "text_encoder_2"))
    tok1 = clip_bpe.CLIPTokenizer.from_dir(os.path.join(path, "tokenizer"))
    tok2 = clip_bpe.CLIPTokenizer.from_dir(os.path.join(path, "tokenizer_2"))
    sc = sched.read_config(os.path.join(path, "scheduler", "scheduler_config.json"))
    defaults = {k: serve[k] for k in ("guidance_scale", "num_inference_steps", "negative_prompt") if k in serve}
    te3 = tok3 = vae = None
    if has("text_encoder_3") and not drop_t5:
        te3, _ = read_t5(os.path.join(path, "text_encoder_3"))
        tok3 = t5_tokenizer.T5Tokenizer.from_dir(os.path.join(path, "tokenizer_3"))
    if has("vae"):
        if serve.get("pixel_space"):
            raise ValueError(f"{path}: ditserve.json says pixel_space but the pipeline has a vae")
        vae = read_vae(os.path.join(path, "vae"))
    elif not serve.get("pixel_space"):
        raise ValueError(f"{path}: no vae and ditserve.json does not say pixel_space: true")
    vae_config = None if vae is None else {k: v for k, v in _read_json(os.path.join(path, "vae", "config.json"))
                                           .items() if not k.startswith("_")}
    return sd3pipe.Pipeline(transformer, te1, tok1, te2, tok2, sc, text_encoder_3=te3, tokenizer_3=tok3, vae=vae,
                            vae_config=vae_config, max_sequence_length=int(serve.get("max_sequence_length", 256)),
                            defaults=defaults)


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
