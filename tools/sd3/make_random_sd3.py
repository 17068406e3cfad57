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

--t5: a T5 v1.1 encoder (text_encoder_3/tokenizer_3) is not written yet (TODO, docs/TEXT_MODELS.md); the option fails
with a message saying so. Without T5 the context's T5 part is zeros of max_sequence_length tokens (ditserve.json).
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
from tools.sd3 import clip_bpe, clip_text, layout, mmdit  # noqa: E402
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


def perturb_norms(model, gen):
    """Every LayerNorm (affine) and RMSNorm weight to 1 + N(0, 0.1²), LayerNorm biases N(0, 0.05²)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm) and mod.elementwise_affine:
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))
            elif isinstance(mod, mmdit.RMSNorm):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
    return model


def make_tokenizers(max_length):
    vocab, merges = clip_bpe.train_bpe(CORPUS * 2, num_merges=400, min_frequency=2)
    return (clip_bpe.CLIPTokenizer(vocab, merges, max_length, pad_token=clip_bpe.EOS),
            clip_bpe.CLIPTokenizer(vocab, merges, max_length, pad_token="!"))


def build(args):
    if args.t5:
        raise SystemExit("--t5: the T5 v1.1 encoder reference is not written yet (TODO, docs/TEXT_MODELS.md); "
                         "leave --t5 out to write a CLIP-only folder (T5 part = zeros)")
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
    return sd3pipe.Pipeline(tr, clips[0], tok1, clips[1], tok2, sched.default_config(args.shift),
                            max_sequence_length=args.max_sequence_length,
                            defaults={"guidance_scale": args.guidance, "num_inference_steps": args.steps})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--shard-bytes", type=int, default=0, help="shard each weight file at this many bytes (0: one)")
    p.add_argument("--qk-norm", action="store_true", help="SD3.5: qk_norm rms_norm")
    p.add_argument("--dual-attention-layers", default="", help="SD3.5 MMDiT-X blocks, e.g. 0,1")
    p.add_argument("--t5", action="store_true", help="add a T5 encoder (not written yet: fails, TODO)")
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
    p.add_argument("--max-sequence-length", type=int, default=8, help="T5 part of the context (zeros)")
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    pipe = build(args)
    layout.write_pipeline(args.out, pipe, dtype=args.dtype, shard_bytes=args.shard_bytes or None)
    params = {k: sum(p.numel() for p in getattr(pipe, k).parameters())
              for k in ("transformer", "text_encoder", "text_encoder_2")}
    print(json.dumps({"out": args.out, "dtype": args.dtype, "params": params,
                      "bytes": layout.folder_bytes(args.out), "transformer": pipe.transformer.config_json()}))


if __name__ == "__main__":
    main()
