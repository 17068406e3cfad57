"""The encoder half of diffusers' AutoencoderKL, for TRAINING the project's own small VAE (tools/train_vae.py).

The server never runs an encoder: it only decodes (tools/dit/vae.py is the reference decoder the backends are tested
against). Training needs the whole autoencoder, so this file adds the encoder with diffusers' parameter names
(`encoder.*`, `quant_conv.*`) and joins it to vae.FullDecoder: the saved state_dict is a complete diffusers
AutoencoderKL file, which the server's decoders load unchanged (they ignore the encoder keys).

Encoder: conv_in → down_blocks (layers_per_block resnets each; all but the last end in a stride-2 3×3 conv after
padding the right and bottom edge by one) → mid_block (resnet, attention, resnet) → GroupNorm → SiLU → conv_out to
2·latent_channels → quant_conv (1×1). The output is the mean and log-variance of a diagonal Gaussian per latent
value; log-variance is clamped to [−30, 20] as in diffusers.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .vae import FullDecoder, MidBlock, ResnetBlock, _conv3, _group_norm


class Downsampler(nn.Module):
    """Pad right and bottom by one (zeros), then a 3×3 conv with stride 2 and no padding (key `conv`)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class DownBlock(nn.Module):
    """diffusers DownEncoderBlock2D: `layers_per_block` resnets, then `downsamplers.0` unless it is the last block."""

    def __init__(self, cin, cout, num_resnets, groups, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout, groups) for j in range(num_resnets)])
        self.downsamplers = nn.ModuleList([Downsampler(cout)]) if add_downsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class KLEncoderBody(nn.Module):
    """The `encoder.*` part."""

    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, groups, mid_attention):
        super().__init__()
        self.conv_in = _conv3(in_channels, block_out_channels[0])
        blocks, prev = [], block_out_channels[0]
        for i, w in enumerate(block_out_channels):
            blocks.append(DownBlock(prev, w, layers_per_block, groups, add_downsample=i < len(block_out_channels) - 1))
            prev = w
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(prev, groups, mid_attention)
        self.conv_norm_out = _group_norm(prev, groups)
        self.conv_out = _conv3(prev, 2 * latent_channels)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """Encoder + quant_conv + the reference FullDecoder. `encode` returns (mean, logvar) of the UNSCALED latent;
    `decode_unscaled` maps an unscaled latent to the image (FullDecoder itself takes the scaled, diffusion-space
    latent, as the server does)."""

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        c = config
        self.encoder = KLEncoderBody(int(c["in_channels"]), int(c["latent_channels"]), list(c["block_out_channels"]),
                                     int(c["layers_per_block"]), int(c["norm_num_groups"]),
                                     bool(c.get("mid_block_add_attention", True)))
        lat2 = 2 * int(c["latent_channels"])
        self.quant_conv = nn.Conv2d(lat2, lat2, kernel_size=1)
        self.full = FullDecoder(dict(c, scaling_factor=1.0, shift_factor=None))

    def encode(self, x):
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_unscaled(self, z):
        return self.full(z)

    def state_dict_diffusers(self):
        """encoder.*, quant_conv.*, post_quant_conv.*, decoder.*: the key set of a diffusers AutoencoderKL file."""
        sd = {}
        for k, v in self.state_dict().items():
            sd[k[len("full."):] if k.startswith("full.") else k] = v.detach().float().contiguous()
        return sd
