#!/usr/bin/env python3
"""Writes a random-weight StableDiffusion3Pipeline folder of a small configuration, in the released layout
(tools/sd3/layout.py), for conformance tests of the server's SD3 path (issue 24).

Weights are torch's default initialisation (seeded), with the LayerNorm/RMSNorm weights and biases perturbed so
that no affine parameter is the identity; the stored pos_embed is the sin-cos table. The two tokenizers share a
BPE learnt on a built-in English + scene-prompt corpus (CLIP-style vocabulary: 512 byte symbols, the merges, then
<|startoftext|>, <|endoftext|>); tokenizer pads with <|endoftext|>, tokenizer_2 with "!" (as SD3's).

  /usr/bin/python3 -m tools.sd3.make_random_sd3 --out /tmp/sd3-tiny
  /usr/bin/python3 -m tools.sd3.make_random_sd3 --out /tmp/sd35-tiny --qk-norm --dual-attention-layers 0,1 --dtype bf16
  … --shard-bytes 200000      # sharded safetensors with *.safetensors.index.json

--t5: a T5 v1.1 encoder (text_encoder_3, tools/sd3/t5_encoder.py) of width joint_attention_dim with tokenizer_3 =
the SentencePiece folder tools/fixtures/tokenizers/t5 (4,000 pieces; vocab_size 4,128 as T5 pads 32,100 to 32,128).
Without it the context's T5 part is zeros of max_sequence_length tokens (ditserve.json).

--vae: an AutoencoderKL (tools/dit/vae.py FullDecoder) with latent_channels = --in-channels, in SD3's configuration
(scaling_factor 1.5305, shift_factor 0.0609, use_post_quant_conv and use_quant_conv false; --vae-post-quant-conv
turns the 1×1 conv on) at a tiny width (--vae-channels); the image side is sample_size·2^(stages − 1). conv_out is
scaled so that the random decoder's image lies mostly inside [−1, 1].
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.dit import vae as vae_ref  # noqa: E402
from tools.sd3 import clip_bpe, clip_text, layout, mmdit, t5_encoder, t5_tokenizer  # noqa: E402
from tools.sd3 import pipeline as sd3pipe  # noqa: E402
from tools.sd3 import scheduler as sched  # noqa: E402

CORPUS = [
    "a photograph of an astronaut riding a horse on the moon",
    "the quick brown fox jumps over the lazy dog",
    "a cat holding a sign that says hello world",
    "an oil painting of a lighthouse at sunset, highly detailed, 4k",
    "portrait of a woman with red hair, studio lighting",
    "a bowl of fruit: apples, pears and grapes on a wooden table",
    "cyberpunk city street at night, neon lights, rain",
    "a red cube to the left of a blue sphere",
    "a green pyramid above a white ball",
    "it's a small yellow box under the big tree",
]


T5_TOKENIZER = os.path.join(ROOT, "tools", "fixtures", "tokenizers", "t5")
T5_VOCAB = 4128


def perturb_norms(model, gen):
    """Every LayerNorm and GroupNorm (affine), RMSNorm and T5LayerNorm weight to 1 + N(0, 0.1²), LayerNorm and
    GroupNorm biases N(0, 0.05²)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and getattr(
                    mod, "elementwise_affine", getattr(mod, "affine", False)):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))
            elif isinstance(mod, (mmdit.RMSNorm, t5_encoder.T5LayerNorm)):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
    return model


def make_tokenizers(max_length):
    vocab, merges = clip_bpe.train_bpe(CORPUS * 2, num_merges=400, min_frequency=2)
    return (clip_bpe.CLIPTokenizer(vocab, merges, max_length, pad_token=clip_bpe.EOS),
            clip_bpe.CLIPTokenizer(vocab, merges, max_length, pad_token="!"))


def vae_config(args):
    """SD3's vae/config.json keys at the size the options give."""
    widths = [int(x) for x in args.vae_channels.split(",")]
    return {"act_fn": "silu", "block_out_channels": widths, "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "force_upcast": True, "in_channels": 3, "latent_channels": args.in_channels, "latents_mean": None,
            "latents_std": None, "layers_per_block": args.vae_layers, "mid_block_add_attention": True,
            "norm_num_groups": args.vae_groups, "out_channels": 3,
            "sample_size": args.sample_size * 2 ** (len(widths) - 1), "scaling_factor": args.vae_scaling,
            "shift_factor": args.vae_shift, "up_block_types": ["UpDecoderBlock2D"] * len(widths),
            "use_post_quant_conv": args.vae_post_quant_conv, "use_quant_conv": False}


def build_vae(args, gen):
    cfg = vae_config(args)
    dec = perturb_norms(vae_ref.FullDecoder(cfg), gen)
    with torch.no_grad():
        dec.decoder.conv_out.weight.mul_(args.vae_out_gain)
    return dec.eval(), cfg


def build_t5(args, width, gen):
    te = t5_encoder.T5EncoderModel(vocab_size=T5_VOCAB, d_model=width, d_kv=args.t5_d_kv, d_ff=args.t5_d_ff,
                                   num_layers=args.t5_layers, num_heads=args.t5_heads)
    te = perturb_norms(t5_encoder.init_weights(te), gen)
    return te.eval(), t5_tokenizer.T5Tokenizer.from_dir(T5_TOKENIZER)


def build(args):
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    tok1, tok2 = make_tokenizers(args.max_length)
    clips = []
    for hidden, act, pad in ((args.clip_hidden[0], "quick_gelu", tok1.pad_token_id),
                             (args.clip_hidden[1], "gelu", tok2.pad_token_id)):
        te = clip_text.CLIPTextModelWithProjection(
            vocab_size=len(tok1.encoder), hidden_size=hidden, intermediate_size=4 * hidden, projection_dim=hidden,
            num_hidden_layers=args.clip_layers, num_attention_heads=args.clip_heads,
            max_position_embeddings=args.max_length, hidden_act=act, layer_norm_eps=1e-5, pad_token_id=pad,
            bos_token_id=tok1.bos_token_id, eos_token_id=tok1.eos_token_id)
        clips.append(perturb_norms(te, gen))
    dual = [int(x) for x in args.dual_attention_layers.split(",") if x.strip()] if args.dual_attention_layers else []
    dim = args.heads * args.head_dim
    width = sum(args.clip_hidden)
    tr = mmdit.SD3Transformer2DModel(
        sample_size=args.sample_size, patch_size=args.patch_size, in_channels=args.in_channels,
        num_layers=args.layers, attention_head_dim=args.head_dim, num_attention_heads=args.heads,
        joint_attention_dim=args.joint_attention_dim or width, caption_projection_dim=dim,
        pooled_projection_dim=width, out_channels=args.in_channels,
        pos_embed_max_size=args.pos_embed_max_size or args.sample_size // args.patch_size + 4,
        dual_attention_layers=dual, qk_norm="rms_norm" if args.qk_norm else None)
    perturb_norms(tr, gen)
    te3, tok3 = build_t5(args, tr.config["joint_attention_dim"], gen) if args.t5 else (None, None)
    vae, vcfg = build_vae(args, gen) if args.vae else (None, None)
    return sd3pipe.Pipeline(tr, clips[0], tok1, clips[1], tok2, sched.default_config(args.shift),
                            text_encoder_3=te3, tokenizer_3=tok3, vae=vae, vae_config=vcfg,
                            max_sequence_length=args.max_sequence_length,
                            defaults={"guidance_scale": args.guidance, "num_inference_steps": args.steps})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--shard-bytes", type=int, default=0, help="shard each weight file at this many bytes (0: one)")
    p.add_argument("--qk-norm", action="store_true", help="SD3.5: qk_norm rms_norm")
    p.add_argument("--dual-attention-layers", default="", help="SD3.5 MMDiT-X blocks, e.g. 0,1")
    p.add_argument("--t5", action="store_true", help="add text_encoder_3/tokenizer_3 (T5 v1.1)")
    p.add_argument("--t5-dtype", default="", choices=("", "fp32", "fp16", "bf16"), help="default: --dtype")
    p.add_argument("--t5-layers", type=int, default=2)
    p.add_argument("--t5-heads", type=int, default=2)
    p.add_argument("--t5-d-kv", type=int, default=16)
    p.add_argument("--t5-d-ff", type=int, default=64)
    p.add_argument("--vae", action="store_true", help="add vae/ (AutoencoderKL, SD3's configuration)")
    p.add_argument("--vae-channels", default="8,16,16", help="block_out_channels")
    p.add_argument("--vae-groups", type=int, default=4, help="norm_num_groups")
    p.add_argument("--vae-layers", type=int, default=1, help="layers_per_block")
    p.add_argument("--vae-scaling", type=float, default=1.5305)
    p.add_argument("--vae-shift", type=float, default=0.0609)
    p.add_argument("--vae-post-quant-conv", action="store_true", help="use_post_quant_conv true (SD3: false)")
    p.add_argument("--vae-out-gain", type=float, default=1.0, help="conv_out's weights are multiplied by this")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--sample-size", type=int, default=8, help="latent side (image side = 8× with a VAE)")
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument("--in-channels", type=int, default=16)
    p.add_argument("--pos-embed-max-size", type=int, default=0, help="default: grid + 4 (exercises the crop)")
    p.add_argument("--clip-hidden", type=int, nargs=2, default=[32, 48], help="widths of CLIP 1 and CLIP 2")
    p.add_argument("--clip-layers", type=int, default=2)
    p.add_argument("--clip-heads", type=int, default=2)
    p.add_argument("--joint-attention-dim", type=int, default=0, help="default: the CLIP widths' sum (T5's width)")
    p.add_argument("--max-length", type=int, default=77, help="tokenizer model_max_length")
    p.add_argument("--max-sequence-length", type=int, default=8, help="T5 part of the context (zeros without --t5)")
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    pipe = build(args)
    layout.write_pipeline(args.out, pipe, dtype=args.dtype, shard_bytes=args.shard_bytes or None,
                          t5_dtype=args.t5_dtype or None)
    params = {k: sum(p.numel() for p in getattr(pipe, k).parameters())
              for k in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")
              if getattr(pipe, k) is not None}
    print(json.dumps({"out": args.out, "dtype": args.dtype, "params": params,
                      "bytes": layout.folder_bytes(args.out), "transformer": pipe.transformer.config_json()}))


if __name__ == "__main__":
    main()
