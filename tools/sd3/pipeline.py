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
config's shift, timestep σ·1000, Euler steps in fp32. Decoding: the VAE when there is one (AutoencoderKL's
decode path, tools/dit/vae.py FullDecoder: z/scaling_factor + shift_factor, post_quant_conv only when the config's
use_post_quant_conv is true — SD3's VAE sets it false —, f = 2^(stages − 1)); a PIXEL-SPACE model (no ``vae/``,
such as models/shapes) has f = 1 and its sample is the image in [−1, 1]. Image bytes: (x/2 + 0.5) clamped to
[0, 1], ×255, rounded (diffusers' VaeImageProcessor.postprocess to uint8).

T5 (text_encoder_3, tools/sd3/t5_encoder.py) with tokenizer_3 (tools/sd3/t5_tokenizer.py): the prompt's ids cut
to max_sequence_length − 1, ``</s>``, padded; the encoder's last_hidden_state is the context's T5 part, its width
must be joint_attention_dim (the CLIP part is zero-padded to it). A pipeline built without text_encoder_3 (what
diffusers does with ``text_encoder_3=None``, layout.load_pipeline(drop_t5=True)) has zeros there instead.

  /usr/bin/python3 -m tools.sd3.pipeline --model models/shapes --prompt "a red cube left of a blue ball" --out x.png
  /usr/bin/python3 -m tools.sd3.pipeline --model tools/pipeline-fixtures/sd3-tiny-full --prompt "a cat" [--no-t5] --out y.png
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
    """The components of a StableDiffusion3Pipeline folder, in memory. vae None: pixel space; vae_config: the VAE's
    diffusers config.json keys (written back by layout.write_pipeline)."""

    def __init__(self, transformer, text_encoder, tokenizer, text_encoder_2, tokenizer_2, scheduler_config,
                 text_encoder_3=None, tokenizer_3=None, vae=None, max_sequence_length=256, defaults=None,
                 vae_config=None):
        if (text_encoder_3 is None) != (tokenizer_3 is None):
            raise ValueError("text_encoder_3 and tokenizer_3 come together")
        if text_encoder_3 is not None and max_sequence_length < 1:
            raise ValueError("a T5 encoder needs max_sequence_length ≥ 1")
        self.transformer, self.vae = transformer, vae
        self.vae_config = dict(vae_config if vae_config is not None else (vae.config if vae is not None else {}))
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.scheduler_config = scheduler_config
        self.max_sequence_length = max_sequence_length
        self.defaults = dict(defaults or {})

    @property
    def vae_scale_factor(self):
        return 1 if self.vae is None else self.vae.scale_factor

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
        joint = self.transformer.config["joint_attention_dim"]
        return encode_clip_ids(self.text_encoder, self.text_encoder_2, ids1, ids2, joint, self.max_sequence_length,
                               t5_embeds=self.encode_t5(prompts, joint))

    def t5_ids(self, prompts):
        """tokenizer_3's padded ids (B, max_sequence_length), and per prompt whether it was cut."""
        r = [self.tokenizer_3(p, self.max_sequence_length) for p in prompts]
        return torch.tensor([a[0] for a in r], dtype=torch.long), [a[1] for a in r]

    def encode_t5(self, prompts, joint_attention_dim):
        """T5's last_hidden_state (B, max_sequence_length, joint_attention_dim), or None without text_encoder_3."""
        if self.text_encoder_3 is None:
            return None
        ids, _ = self.t5_ids(prompts)
        out = self.text_encoder_3(ids.to(next(self.text_encoder_3.parameters()).device))["last_hidden_state"]
        if out.shape[-1] != joint_attention_dim:
            raise ValueError(f"T5's width {out.shape[-1]} differs from joint_attention_dim {joint_attention_dim}")
        return out

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

    @torch.no_grad()
    def decode(self, x):
        """The sample as an image in [−1, 1] (not clamped): the VAE's decode of the latent, or x in pixel space."""
        return x if self.vae is None else self.vae(x.float())

    def __call__(self, prompts, **kw):
        """uint8 images (B, H, W, 3)."""
        return to_uint8(self.decode(self.sample(prompts, **kw)))


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
    p.add_argument("--no-t5", action="store_true", help="leave text_encoder_3 out (its context part: zeros)")
    p.add_argument("--out", required=True, help="PNG path (several prompts: a row)")
    args = p.parse_args(argv)
    pipe = layout.load_pipeline(args.model, drop_t5=args.no_t5)
    imgs = pipe(args.prompt, negative_prompt=args.negative_prompt, guidance_scale=args.guidance,
                num_inference_steps=args.steps, seed=args.seed)
    from PIL import Image
    Image.fromarray(np.concatenate(list(imgs), axis=1)).save(args.out)
    print(json.dumps({"out": os.path.abspath(args.out), "prompts": args.prompt}))


if __name__ == "__main__":
    main()
