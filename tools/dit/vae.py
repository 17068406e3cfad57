"""Reference image decoders for latent models, written from docs/DECODERS.md.

Two decoders turn a diffusion-space latent [N, 4, h, w] into an image [N, 3, f·h, f·w] in [−1, 1] (unclamped):

  * FullDecoder: the decode path of diffusers' AutoencoderKL (the Stable Diffusion VAE, `sd-vae-ft-ema/-mse`):
    image = decoder(post_quant_conv(latent / scaling_factor + shift_factor)), f = 2^(len(block_out_channels) − 1).
  * TinyDecoder: the decoder of diffusers' AutoencoderTiny (TAESD): it takes the latent as is (no scaling),
    f = upsampling_scaling_factor^(len(num_decoder_blocks) − 1).

Parameter names are diffusers' (`post_quant_conv.*`, `decoder.*`), so the state_dict of a diffusers folder loads with
`load_state_dict` after dropping the encoder keys. Like tools/dit/model.py, this is the ground truth the Java and ONNX
decoders are tested against: keep it plain and literal.
"""
import contextlib
import json
import os
import shutil
import tempfile
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import safetensors_io

GN_EPS = 1e-6  # every GroupNorm of the AutoencoderKL decoder
TAESD_CLAMP = 3.0  # diffusers' DecoderTiny soft-clamps with tanh(x / 3) · 3; the constant is not read from the config
ONNX_OPSET = 14
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
ONNX_FILE = "decoder.onnx"
DIFFUSERS_VERSION = "0.27.2"  # written into config.json; readers do not depend on it

# The published configurations (the diffusers config.json of stabilityai/sd-vae-ft-ema and madebyollin/taesd).
SD_VAE_FT_EMA_CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
    "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 256,
    "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TAESD_CONFIG = {
    "_class_name": "AutoencoderTiny", "_diffusers_version": "0.20.0", "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64], "encoder_block_out_channels": [64, 64, 64, 64],
    "force_upcast": False, "in_channels": 3, "latent_channels": 4, "latent_magnitude": 3, "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1], "num_encoder_blocks": [1, 3, 3, 3], "out_channels": 3,
    "scaling_factor": 1.0, "upsampling_scaling_factor": 2,
}

# Older diffusers files name the mid-block attention projections differently (same shapes).
LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
IGNORED_PREFIXES = ("encoder.", "quant_conv.")  # the encoder half of the autoencoder: a decoder does not need it


# ---------------------------------------------------------------------------------------------------------------
# AutoencoderKL decode path


def _group_norm(channels, groups):
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups")
    return nn.GroupNorm(groups, channels, eps=GN_EPS, affine=True)


def _conv3(cin, cout, bias=True):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=bias)


class ResnetBlock(nn.Module):
    """diffusers ResnetBlock2D without time embedding: h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h)));
    out = shortcut(x) + h, shortcut = 1×1 `conv_shortcut` (with bias) when the channel count changes."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = _group_norm(cin, groups)
        self.conv1 = _conv3(cin, cout)
        self.norm2 = _group_norm(cout, groups)
        self.conv2 = _conv3(cout, cout)
        self.conv_shortcut = nn.Conv2d(cin, cout, kernel_size=1, bias=True) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class MidAttention(nn.Module):
    """Single-head self-attention over the h·w positions (row by row) with C features, scale 1/√C, softmax in
    float32, residual add. Keys: group_norm, to_q, to_k, to_v, to_out.0 (Linear [C, C] with bias)."""

    def __init__(self, channels, groups):
        super().__init__()
        self.group_norm = _group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels, bias=True)
        self.to_k = nn.Linear(channels, channels, bias=True)
        self.to_v = nn.Linear(channels, channels, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels, bias=True)])  # to_out.1 is dropout in diffusers
        self.scale = channels ** -0.5  # one head of C channels

    def forward(self, x):
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # [N, h·w, C], position p = row·w + col
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        scores = (q @ k.transpose(1, 2)) * self.scale
        if scores.dtype == torch.float32:  # the usual case; no casts in the exported graph
            att = scores.softmax(dim=-1)
        else:  # half precision: softmax in float32
            att = scores.float().softmax(dim=-1).to(v.dtype)
        out = self.to_out[0](att @ v)  # [N, h·w, C]
        return x + out.transpose(1, 2).reshape_as(x)


class MidBlock(nn.Module):
    """resnets.0 → attentions.0 (if enabled) → resnets.1, all at the last block_out_channels width."""

    def __init__(self, channels, groups, add_attention):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])
        self.attentions = nn.ModuleList([MidAttention(channels, groups)]) if add_attention else None

    def forward(self, x):
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Upsampler(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv C → C (key `conv`)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpBlock(nn.Module):
    """diffusers UpDecoderBlock2D: `layers_per_block + 1` resnets (the first takes the previous block's width),
    then `upsamplers.0` unless it is the last block."""

    def __init__(self, cin, cout, num_resnets, groups, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout, groups) for j in range(num_resnets)])
        self.upsamplers = nn.ModuleList([Upsampler(cout)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class KLDecoderBody(nn.Module):
    """The `decoder.*` part: conv_in → mid_block → up_blocks (widest first) → conv_norm_out → SiLU →
    conv_out."""

    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, groups, mid_attention):
        super().__init__()
        widths = list(reversed(block_out_channels))  # up_blocks.i outputs widths[i]
        self.conv_in = _conv3(latent_channels, widths[0])
        self.mid_block = MidBlock(widths[0], groups, mid_attention)
        blocks, prev = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(UpBlock(prev, w, layers_per_block + 1, groups, add_upsample=i < len(widths) - 1))
            prev = w
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = _group_norm(block_out_channels[0], groups)
        self.conv_out = _conv3(block_out_channels[0], out_channels)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


KL_DEFAULTS = {"latent_channels": 4, "out_channels": 3, "block_out_channels": [64], "layers_per_block": 1,
               "norm_num_groups": 32, "scaling_factor": 0.18215, "shift_factor": None, "use_post_quant_conv": True,
               "mid_block_add_attention": True, "act_fn": "silu"}  # diffusers' AutoencoderKL defaults


class FullDecoder(nn.Module):
    """AutoencoderKL's decode path. forward(latent) takes the DIFFUSION-SPACE latent and returns
    decoder(post_quant_conv(latent / scaling_factor + shift_factor)), the image in [−1, 1] (not clamped)."""

    class_name = "AutoencoderKL"

    def __init__(self, config):
        super().__init__()
        cfg = dict(KL_DEFAULTS)
        cfg.update({k: v for k, v in config.items() if k in KL_DEFAULTS})
        if cfg["act_fn"] != "silu":
            raise ValueError(f"AutoencoderKL act_fn {cfg['act_fn']!r} is not supported (only silu)")
        for k in ("up_block_types",):
            if any(t != "UpDecoderBlock2D" for t in config.get(k) or []):
                raise ValueError(f"AutoencoderKL {k} {config[k]} is not supported (only UpDecoderBlock2D)")
        for k in ("latents_mean", "latents_std"):
            if config.get(k) is not None:
                raise ValueError(f"AutoencoderKL config sets {k}: per-channel latent statistics are not supported")
        self.config = cfg
        self.latent_channels = int(cfg["latent_channels"])
        self.out_channels = int(cfg["out_channels"])
        self.scaling_factor = float(cfg["scaling_factor"])
        self.shift_factor = float(cfg["shift_factor"]) if cfg["shift_factor"] is not None else 0.0
        self.scale_factor = 2 ** (len(cfg["block_out_channels"]) - 1)
        self.post_quant_conv = (nn.Conv2d(self.latent_channels, self.latent_channels, kernel_size=1, bias=True)
                                if cfg["use_post_quant_conv"] else None)
        self.decoder = KLDecoderBody(self.latent_channels, self.out_channels, list(cfg["block_out_channels"]),
                                     int(cfg["layers_per_block"]), int(cfg["norm_num_groups"]),
                                     bool(cfg["mid_block_add_attention"]))

    def forward(self, latent):
        z = latent / self.scaling_factor
        if self.shift_factor != 0.0:
            z = z + self.shift_factor
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


# ---------------------------------------------------------------------------------------------------------------
# AutoencoderTiny (TAESD) decoder


class TinyBlock(nn.Module):
    """diffusers AutoencoderTinyBlock: relu(conv.4(relu(conv.2(relu(conv.0(x))))) + skip(x)); skip is a 1×1 conv
    without bias when the width changes, else identity (the decoder never changes width inside a block)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(_conv3(cin, cout), nn.ReLU(), _conv3(cout, cout), nn.ReLU(), _conv3(cout, cout))
        self.skip = nn.Conv2d(cin, cout, kernel_size=1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv(x) + self.skip(x))


def tiny_layer_kinds(num_decoder_blocks):
    """The kinds of `decoder.layers.K` in order: 'conv' (with bias), 'relu', 'block', 'upsample', 'conv_nobias'.
    For TAESD ([3, 3, 3, 1]) that is 19 layers: 0 conv_in, 1 relu, 2-4 blocks, 5 upsample, 6 conv, 7-9 blocks,
    10 upsample, 11 conv, 12-14 blocks, 15 upsample, 16 conv, 17 block, 18 conv_out (with bias)."""
    kinds = ["conv", "relu"]
    for i, n in enumerate(num_decoder_blocks):
        last = i == len(num_decoder_blocks) - 1
        kinds += ["block"] * n
        kinds += ["conv"] if last else ["upsample", "conv_nobias"]
    return kinds


class TinyDecoderBody(nn.Module):
    def __init__(self, latent_channels, out_channels, block_out_channels, num_blocks, up_factor):
        super().__init__()
        if len(block_out_channels) != len(num_blocks):
            raise ValueError("decoder_block_out_channels and num_decoder_blocks must have the same length")
        layers = [_conv3(latent_channels, block_out_channels[0]), nn.ReLU()]
        for i, n in enumerate(num_blocks):
            c = block_out_channels[i]
            last = i == len(num_blocks) - 1
            layers += [TinyBlock(c, c) for _ in range(n)]
            if not last:
                layers.append(nn.Upsample(scale_factor=up_factor, mode="nearest"))
            layers.append(_conv3(c, out_channels if last else c, bias=last))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


TINY_DEFAULTS = {"latent_channels": 4, "out_channels": 3, "decoder_block_out_channels": [64, 64, 64, 64],
                 "num_decoder_blocks": [3, 3, 3, 1], "upsampling_scaling_factor": 2, "latent_magnitude": 3,
                 "act_fn": "relu", "upsample_fn": "nearest", "scaling_factor": 1.0}  # diffusers' defaults


class TinyDecoder(nn.Module):
    """AutoencoderTiny's decoder. forward(latent) takes the diffusion-space latent as is and returns
    layers(tanh(latent / 3) · 3) · 2 − 1, the image in [−1, 1] (not clamped)."""

    class_name = "AutoencoderTiny"

    def __init__(self, config):
        super().__init__()
        cfg = dict(TINY_DEFAULTS)
        cfg.update({k: v for k, v in config.items() if k in TINY_DEFAULTS})
        if cfg["act_fn"] != "relu":
            raise ValueError(f"AutoencoderTiny act_fn {cfg['act_fn']!r} is not supported (only relu)")
        if cfg["upsample_fn"] != "nearest":
            raise ValueError(f"AutoencoderTiny upsample_fn {cfg['upsample_fn']!r} is not supported (only nearest)")
        if float(cfg["scaling_factor"]) != 1.0:
            raise ValueError(f"AutoencoderTiny scaling_factor {cfg['scaling_factor']} is not supported: the tiny "
                             f"decoder takes the diffusion-space latent as is (scaling_factor 1.0)")
        self.config = cfg
        self.latent_channels = int(cfg["latent_channels"])
        self.out_channels = int(cfg["out_channels"])
        up = int(cfg["upsampling_scaling_factor"])
        self.scale_factor = up ** (len(cfg["num_decoder_blocks"]) - 1)
        self.decoder = TinyDecoderBody(self.latent_channels, self.out_channels, list(cfg["decoder_block_out_channels"]),
                                       list(cfg["num_decoder_blocks"]), up)

    def forward(self, latent):
        x = torch.tanh(latent / TAESD_CLAMP) * TAESD_CLAMP
        return self.decoder(x) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# diffusers folders: config.json + diffusion_pytorch_model.safetensors

DECODER_CLASSES = {"AutoencoderKL": FullDecoder, "AutoencoderTiny": TinyDecoder}


def decoder_from_config(config):
    cls = DECODER_CLASSES.get(config.get("_class_name"))
    if cls is None:
        raise ValueError(f"unknown decoder class {config.get('_class_name')!r}; known: {sorted(DECODER_CLASSES)}")
    return cls(config)


def rename_legacy_keys(sd):
    """Maps the older attention names (`...attentions.0.query.weight`) to the current ones (`...to_q.weight`)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) >= 2 and "attentions" in parts and parts[-2] in LEGACY_ATTENTION_NAMES:
            k = ".".join(parts[:-2] + [LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        if k in out:
            raise ValueError(f"{k} appears under both its old and its new name")
        out[k] = v
    return out


def decoder_state_dict(sd):
    """Drops the encoder keys and renames legacy attention keys; the rest must be the decoder's."""
    return rename_legacy_keys({k: v for k, v in sd.items() if not k.startswith(IGNORED_PREFIXES)})


def load_decoder_state(module, sd, where="state_dict"):
    sd = decoder_state_dict(sd)
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{where}: {k} has shape {list(v.shape)}, the config needs {list(own[k].shape)}")
    module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return module


def read_config(folder):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a JSON object")
    return cfg


def load_decoder(folder):
    """Reads a diffusers AutoencoderKL or AutoencoderTiny folder; returns the float32 decoder in eval mode
    (its `.config` holds the config keys it read)."""
    module = decoder_from_config(read_config(folder))
    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{folder}: no {WEIGHTS_FILE} (convert other layouts with tools/convert.py --vae)")
    sd, _ = safetensors_io.read(path)
    return load_decoder_state(module, sd, path).eval()


def save_decoder_folder(module, config, folder, legacy_names=False, encoder_stub=True):
    """Writes config.json (with _class_name, _diffusers_version) and diffusion_pytorch_model.safetensors (float32).
    With encoder_stub the file also gets a few random encoder keys (a real autoencoder file has the encoder), so
    that readers are tested to ignore them. legacy_names writes the mid-block attention as
    query/key/value/proj_attn."""
    os.makedirs(folder, exist_ok=True)
    cfg = dict(config)
    cfg.setdefault("_class_name", module.class_name)
    cfg.setdefault("_diffusers_version", DIFFUSERS_VERSION)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    sd = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
    if legacy_names:
        sd = to_legacy_keys(sd)
    if encoder_stub:
        sd.update(_encoder_stub(module))
    safetensors_io.write(os.path.join(folder, WEIGHTS_FILE), sd, {"format": "pt"})


def _encoder_stub(module):
    g = torch.Generator().manual_seed(7)
    if isinstance(module, FullDecoder):
        c0, lat = module.config["block_out_channels"][0], module.latent_channels
        return {"encoder.conv_in.weight": torch.randn((c0, 3, 3, 3), generator=g) * 0.1,
                "quant_conv.weight": torch.randn((2 * lat, 2 * lat, 1, 1), generator=g) * 0.1,
                "quant_conv.bias": torch.zeros(2 * lat)}
    c0 = module.config["decoder_block_out_channels"][0]
    return {"encoder.layers.0.weight": torch.randn((c0, 3, 3, 3), generator=g) * 0.1}


def to_legacy_keys(sd):
    """The inverse of rename_legacy_keys: to_q/to_k/to_v/to_out.0 → query/key/value/proj_attn."""
    out = {}
    for k, v in sd.items():
        if ".attentions." in k:
            for old, new in LEGACY_ATTENTION_NAMES.items():
                k = k.replace(f".{new}.", f".{old}.")
        out[k] = v
    return out


@contextlib.contextmanager
def staged_folder(final):
    """Yields a temporary sibling folder to write into; when the block completes, it replaces `final` (an older
    folder there is removed). A crash or an exception leaves `final` as it was and removes the temporary folder."""
    final = os.path.abspath(final)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the published folder gets the usual mode
    try:
        yield tmp
        old = None
        if os.path.lexists(final):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=parent)
            os.rename(final, os.path.join(old, "x"))
        os.rename(tmp, final)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# ONNX


def export_decoder_onnx(module, path, example_hw=(6, 5)):
    """latent float32 [N, C, h, w] (N, h, w dynamic) → image float32 [N, C_out, f·h, f·w]. The graph includes the
    latent scaling, so it takes the diffusion-space latent like forward()."""
    module = module.eval()
    x = torch.randn(2, module.latent_channels, *example_hw)
    dyn = {"latent": {0: "N", 2: "h", 3: "w"}, "image": {0: "N", 2: "H", 3: "W"}}
    with torch.no_grad(), warnings.catch_warnings():
        # torch 1.13 warns for every constant it folds ("shape inference of prim::Constant type is missing"): noise
        warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
        torch.onnx.export(module, (x,), path, input_names=["latent"], output_names=["image"], dynamic_axes=dyn,
                          opset_version=ONNX_OPSET, do_constant_folding=True)
    import onnx
    onnx.checker.check_model(onnx.load(path))


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())
