"""Reference StableDiffusion3Pipeline (prompt → image), from docs/TEXT_MODELS.md.

Prompt encoding, exactly as diffusers' pipeline does it:
- both CLIP tokenizers pad/truncate to ``tokenizer.model_max_length`` (the FIRST tokenizer's, for both);
- per-token context: CLIP-1 and CLIP-2 ``hidden_states[-2]`` (clip_skip None) concatenated on channels, zero-padded
  on the right to joint_attention_dim; then the T5 part on the sequence axis: T5's last hidden state over
  ``max_sequence_length`` tokens, or, without text_encoder_3, zeros of (B, max_sequence_length, joint_attention_dim);
- pooled: [CLIP-1 text_embeds ; CLIP-2 text_embeds];
- the negative prompt (default "") is encoded through the same encoders (not zeros); CFG batches [negative, positive]
  and mixes v = v_u + g·(v_c − v_u) when g > 1.
Sampling: initial noise N(0, 1) of (B, in_channels, H/f, W/f), FlowMatchEulerDiscreteScheduler sigmas with the
config's shift, timestep σ·1000, Euler steps in fp32. Decoding: the VAE when there is one (z/scaling_factor +
shift_factor) — not written yet here (TODO with issue 24's VAE work); a PIXEL-SPACE model (no ``vae/``, such as
models/shapes) has f = 1 and its sample is the image in [−1, 1]. Image bytes: (x/2 + 0.5) clamped to [0, 1], ×255,
rounded.

T5 (text_encoder_3) is not written yet (TODO: a T5 v1.1 encoder reference, docs/TEXT_MODELS.md); a folder with
text_encoder_3/ is refused by layout.load_pipeline rather than silently encoded with zeros.

  /usr/bin/python3 -m tools.sd3.pipeline --model models/shapes --prompt "a red cube left of a blue ball" --out x.png
"""
import argparse
import json
import os

import numpy as np
import torch

from . import scheduler as sched


def encode_clip_ids(text_encoder_1, text_encoder_2, ids1, ids2, joint_attention_dim, max_sequence_length,
                    t5_embeds=None):
    """(context (B, T + max_sequence_length, joint_attention_dim), pooled (B, p1 + p2)) from the padded id tensors
    of the two CLIP tokenizers. Differentiable (the trainer uses it)."""
    o1, o2 = text_encoder_1(ids1), text_encoder_2(ids2)
    clip = torch.cat([o1["penultimate"], o2["penultimate"]], dim=-1)
    width = clip.shape[-1]
    if width > joint_attention_dim:
        raise ValueError(f"CLIP widths sum to {width} > joint_attention_dim {joint_attention_dim}")
    clip = torch.nn.functional.pad(clip, (0, joint_attention_dim - width))
    if t5_embeds is None:
        t5_embeds = torch.zeros(clip.shape[0], max_sequence_length, joint_attention_dim, dtype=clip.dtype,
                                device=clip.device)
    context = torch.cat([clip, t5_embeds.to(clip.dtype)], dim=1)
    pooled = torch.cat([o1["text_embeds"], o2["text_embeds"]], dim=-1)
    return context, pooled


class Pipeline:
    """The components of a StableDiffusion3Pipeline folder, in memory. vae None: pixel space."""

    def __init__(self, transformer, text_encoder, tokenizer, text_encoder_2, tokenizer_2, scheduler_config,
                 text_encoder_3=None, tokenizer_3=None, vae=None, max_sequence_length=256, defaults=None):
        if text_encoder_3 is not None:
            raise NotImplementedError("T5 text_encoder_3 is not written yet (docs/TEXT_MODELS.md); TODO")
        if vae is not None:
            raise NotImplementedError("the SD3 VAE decoder is not written in this reference yet; TODO")
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.scheduler_config = scheduler_config
        self.max_sequence_length = max_sequence_length
        self.defaults = dict(defaults or {})

    @property
    def vae_scale_factor(self):
        return 1 if self.vae is None else 8

    def token_ids(self, prompts):
        """The padded id tensors of both CLIP tokenizers, and per prompt whether either cut it."""
        n = self.tokenizer.model_max_length      # the first tokenizer's length, for both (as the pipeline does)
        r1 = [self.tokenizer(p, n) for p in prompts]
        r2 = [self.tokenizer_2(p, n) for p in prompts]
        ids1 = torch.tensor([r[0] for r in r1], dtype=torch.long)
        ids2 = torch.tensor([r[0] for r in r2], dtype=torch.long)
        return ids1, ids2, [a[1] or b[1] for a, b in zip(r1, r2)]

    @torch.no_grad()
    def encode_prompt(self, prompts):
        ids1, ids2, _ = self.token_ids(prompts)
        dev = next(self.text_encoder.parameters()).device
        ids1, ids2 = ids1.to(dev), ids2.to(dev)
        return encode_clip_ids(self.text_encoder, self.text_encoder_2, ids1, ids2,
                               self.transformer.config["joint_attention_dim"], self.max_sequence_length)

    def sigmas(self, steps):
        c = self.scheduler_config
        return sched.sigmas(steps, c.get("shift", 1.0), c.get("num_train_timesteps", 1000))

    @torch.no_grad()
    def sample(self, prompts, negative_prompt="", guidance_scale=None, num_inference_steps=None, noise=None,
               seed=0, height=None, width=None, callback=None):
        """Samples (B, C, H, W) float32 (the model's space). noise: the initial N(0,1) tensor; else drawn from a
        torch CPU generator seeded with `seed` (torch.randn of the latent shape, as diffusers' randn_tensor)."""
        g = self.defaults.get("guidance_scale", 7.0) if guidance_scale is None else guidance_scale
        steps = self.defaults.get("num_inference_steps", 28) if num_inference_steps is None else num_inference_steps
        cfg = self.transformer.config
        b = len(prompts)
        f = self.vae_scale_factor
        h = (height or cfg["sample_size"] * f) // f
        w = (width or cfg["sample_size"] * f) // f
        if noise is None:
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn((b, cfg["in_channels"], h, w), generator=gen, dtype=torch.float32)
            noise = noise.to(next(self.transformer.parameters()).device)
        x = noise.float().clone()
        ctx, pooled = self.encode_prompt(list(prompts))
        do_cfg = g > 1
        if do_cfg:
            negs = [negative_prompt] * b if isinstance(negative_prompt, str) else list(negative_prompt)
            nctx, npooled = self.encode_prompt(negs)
            ctx, pooled = torch.cat([nctx, ctx]), torch.cat([npooled, pooled])
        sig = self.sigmas(steps)
        T = self.scheduler_config.get("num_train_timesteps", 1000)
        for i in range(steps):
            xin = torch.cat([x, x]) if do_cfg else x
            t = torch.full((xin.shape[0],), float(np.float32(sig[i]) * np.float32(T)), dtype=torch.float32,
                           device=x.device)
            v = self.transformer(xin, ctx, pooled, t).float()
            if do_cfg:
                vu, vc = v.chunk(2)
                v = vu + g * (vc - vu)
            x = sched.euler_step(x, v, sig[i], sig[i + 1])
            if callback is not None:
                callback(i, x)
        return x

    def __call__(self, prompts, **kw):
        """uint8 images (B, H, W, 3)."""
        return to_uint8(self.sample(prompts, **kw))


def to_uint8(x):
    """(B, 3, H, W) in [−1, 1] → uint8 (B, H, W, 3): (x/2 + 0.5) clamped, ×255, rounded."""
    x = (x.detach().float().cpu() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def main(argv=None):
    from . import layout
    p = argparse.ArgumentParser(description="Reference SD3 pipeline: prompt → PNG")
    p.add_argument("--model", required=True, help="a diffusers StableDiffusion3Pipeline folder")
    p.add_argument("--prompt", required=True, action="append")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG path (several prompts: a row)")
    args = p.parse_args(argv)
    pipe = layout.load_pipeline(args.model)
    imgs = pipe(args.prompt, negative_prompt=args.negative_prompt, guidance_scale=args.guidance,
                num_inference_steps=args.steps, seed=args.seed)
    from PIL import Image
    Image.fromarray(np.concatenate(list(imgs), axis=1)).save(args.out)
    print(json.dumps({"out": os.path.abspath(args.out), "prompts": args.prompt}))


if __name__ == "__main__":
    main()
