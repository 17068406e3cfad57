#!/usr/bin/env python3
"""Trains the bundled text-to-image model (models/shapes, issue 25) from scratch: two tiny CLIP text encoders
(CLIPTextModelWithProjection) and an SD3 MMDiT (SD3Transformer2DModel) on 32×32 RGB pixels, jointly, with SD3's
rectified-flow objective, on prompt scenes generated on the fly (tools/shapes/scenes.py; held-out combinations
never trained).

Recipe (see --help for the numbers):
- x_σ = σ·noise + (1 − σ)·x₀ with x₀ the render in [−1, 1]; target v = noise − x₀; σ logit-normal
  (σ = sigmoid(m + s·N(0,1)), SD3's "lognorm" sampling); the transformer's timestep is σ·1000; plain MSE.
- Prompts with random synonyms; --cfg-drop of them replaced by "" (the pipeline's negative prompt), for
  classifier-free guidance.
- AdamW with linear warm-up, gradient clipping, an EMA of all weights (text encoders included).
- The tokenizers are a BPE trained on the grammar's training prompts at the first start, kept in the checkpoint.
- Checkpoint (atomic, the previous one kept as ckpt.prev.pt) every --ckpt-minutes, on SIGTERM/SIGINT and at the
  end; --resume continues bit-for-bit (model, EMA, optimiser, data and noise generators, step, elapsed time).
- JSON lines in <out>/log.jsonl: {"step", "loss", …} every --log-every steps and {"eval": …} records: judge accuracy
  of the EMA weights through tools/sd3/pipeline.py (Euler, --eval-steps, --eval-guidance, --eval-shift) on a fixed
  eval set, by prompt form, and on the held-out combinations.
- --export DIR writes the diffusers pipeline folder (EMA weights, fp16 by default) and exits.

  nice -n 10 /usr/bin/python3 tools/shapes/train.py --out runs/shapes                 # start (2-core machine)
  nice -n 10 /usr/bin/python3 tools/shapes/train.py --out runs/shapes --resume        # continue
  nice -n 10 /usr/bin/python3 tools/shapes/train.py --out runs/shapes --init-from models/shapes   # continue from
                                                      # the committed folder (a new machine has no runs/shapes)
  /usr/bin/python3 tools/shapes/train.py --out runs/shapes --export models/shapes     # write the model folder
"""
import argparse
import copy
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.sd3 import clip_bpe, clip_text, mmdit  # noqa: E402
from tools.sd3 import pipeline as sd3pipe  # noqa: E402
from tools.shapes import scenes  # noqa: E402

TRAINING_FILE = "training.json"      # in an exported folder: the recipe (--init-from continues it)
LOG_FILE = "training_log.jsonl"      # in an exported folder: the run's log, thinned (the loss curve, evaluations)
RUN_CONTROL = ("out", "resume", "export", "eval_only", "export_dtype", "init_from", "grid", "time_budget", "steps")
ARCH_KEYS = ("dim", "depth", "heads", "patch", "text_hidden", "text_layers", "text_heads", "text_proj", "max_length",
             "bpe_prompts")


def parse_args(argv=None):
    """The options; with --resume (or --export/--eval-only) every option not given on the command line takes the
    checkpoint's value (resume_args), so `--resume` alone continues the recipe unchanged."""
    return _parser().parse_args(argv)


def explicit_options(argv):
    """The dests of the options given on the command line."""
    p = _parser(argparse.SUPPRESS)
    return set(vars(p.parse_args(argv)))


def resume_args(args, saved, explicit):
    """args with the checkpoint's values for every option not given explicitly (run-control options excepted)."""
    merged = dict(vars(args))
    for k, v in saved.items():
        if k in merged and k not in explicit and k not in RUN_CONTROL:
            merged[k] = v
    return argparse.Namespace(**merged)


def _parser(default=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/shapes", help="run folder (checkpoint, logs)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/ckpt.pt (architecture from it)")
    p.add_argument("--init-from", metavar="DIR",
                   help="start from an exported pipeline folder (models/shapes): its weights become both the "
                        "weights and the EMA, its tokenizers, architecture and trained-step count are kept, the "
                        "optimiser starts fresh with a new warm-up (the folder keeps no optimiser state)")
    p.add_argument("--steps", type=int, default=10 ** 9, help="stop at this total step count")
    p.add_argument("--time-budget", type=float, default=0, help="stop after this many seconds (0: no limit)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 here: the other core builds Java)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    # architecture (taken from the checkpoint on --resume)
    p.add_argument("--dim", type=int, default=192, help="transformer width")
    p.add_argument("--depth", type=int, default=6, help="transformer blocks (the last is context_pre_only)")
    p.add_argument("--heads", type=int, default=6, help="attention heads (head dim = dim/heads)")
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--text-hidden", type=int, default=64, help="width of each CLIP text encoder")
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--text-proj", type=int, default=64, help="projection_dim of each CLIP")
    p.add_argument("--max-length", type=int, default=16, help="tokenizer model_max_length (BOS + 14 + EOS)")
    p.add_argument("--bpe-prompts", type=int, default=20000, help="training prompts the BPE is learnt from")
    # optimisation
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-drop", type=float, default=0.1, help="fraction of prompts replaced by \"\"")
    p.add_argument("--sigma-mean", type=float, default=0.0, help="logit-normal σ: mean of the logit")
    p.add_argument("--sigma-std", type=float, default=1.0, help="logit-normal σ: std of the logit")
    # bookkeeping
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--quiet", action="store_true", help="log to <out>/log.jsonl only, not to stdout")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--eval-minutes", type=float, default=30.0, help="0: no periodic evaluation")
    p.add_argument("--eval-n", type=int, default=150, help="eval prompts (forms in equal shares)")
    p.add_argument("--eval-held-out", type=int, default=48, help="held-out two-object prompts evaluated")
    p.add_argument("--eval-seed", type=int, default=1234)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--eval-guidance", type=float, default=4.0)
    p.add_argument("--eval-shift", type=float, default=1.0, help="scheduler shift used for evaluation and export")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint's EMA and exit")
    p.add_argument("--grid", metavar="OUT.png", help="with --eval-only: also a grid of the first 24 eval prompts")
    # export
    p.add_argument("--export", metavar="DIR", help="write the pipeline folder from the checkpoint and exit")
    p.add_argument("--export-dtype", default="fp16", choices=("fp32", "fp16", "bf16"))
    if default is argparse.SUPPRESS:
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return p


# ---------------------------------------------------------------------------------------------------------------
# Model

class ShapesModel(nn.Module):
    """The three trained components together (one optimiser, one EMA)."""

    def __init__(self, arch, vocab_size, ids):
        super().__init__()
        self.arch = dict(arch)
        h, proj = arch["text_hidden"], arch["text_proj"]
        common = dict(vocab_size=vocab_size, hidden_size=h, intermediate_size=4 * h, projection_dim=proj,
                      num_hidden_layers=arch["text_layers"], num_attention_heads=arch["text_heads"],
                      max_position_embeddings=arch["max_length"], layer_norm_eps=1e-5,
                      bos_token_id=ids["bos"], eos_token_id=ids["eos"])
        # as in SD3: CLIP-L style (quick_gelu, pad = EOS) and OpenCLIP-G style (exact gelu, pad = "!" = id 0)
        self.text_encoder = clip_text.CLIPTextModelWithProjection(hidden_act="quick_gelu", pad_token_id=ids["pad1"],
                                                                  **common)
        self.text_encoder_2 = clip_text.CLIPTextModelWithProjection(hidden_act="gelu", pad_token_id=ids["pad2"],
                                                                    **common)
        d, heads = arch["dim"], arch["heads"]
        if d % heads:
            raise ValueError(f"--dim {d} is not divisible by --heads {heads}")
        grid = scenes.L // arch["patch"]
        self.transformer = mmdit.SD3Transformer2DModel(
            sample_size=scenes.L, patch_size=arch["patch"], in_channels=3, num_layers=arch["depth"],
            attention_head_dim=d // heads, num_attention_heads=heads, joint_attention_dim=2 * h,
            caption_projection_dim=d, pooled_projection_dim=2 * proj, out_channels=3, pos_embed_max_size=grid,
            dual_attention_layers=[], qk_norm=None)
        clip_text.init_weights(self.text_encoder)
        clip_text.init_weights(self.text_encoder_2)
        mmdit.init_weights(self.transformer)


def make_tokenizers(arch, seed):
    """Two CLIP tokenizers sharing one BPE learnt on training prompts of the grammar; the first pads with
    <|endoftext|>, the second with "!" (as SD3's tokenizer and tokenizer_2)."""
    rng = np.random.default_rng(seed + 7)
    corpus = [scenes.prompt_text(scenes.sample_spec(rng, held_out=False), rng) for _ in range(arch["bpe_prompts"])]
    vocab, merges = clip_bpe.train_bpe(corpus, num_merges=1000, min_frequency=2)
    return tokenizers_from(vocab, merges, arch["max_length"])


def tokenizers_from(vocab, merges, max_length):
    t1 = clip_bpe.CLIPTokenizer(vocab, merges, max_length, pad_token=clip_bpe.EOS)
    t2 = clip_bpe.CLIPTokenizer(vocab, merges, max_length, pad_token="!")
    return t1, t2


def token_ids_of(t1, t2):
    return {"bos": t1.bos_token_id, "eos": t1.eos_token_id, "pad1": t1.pad_token_id, "pad2": t2.pad_token_id}


class IdCache:
    """Padded ids of both tokenizers per prompt (the grammar has a few thousand distinct prompts)."""

    def __init__(self, t1, t2):
        self.t1, self.t2, self.cache = t1, t2, {}

    def __call__(self, prompts):
        rows1, rows2 = [], []
        for p in prompts:
            if p not in self.cache:
                a, cut_a = self.t1(p)
                b, cut_b = self.t2(p, self.t1.model_max_length)
                if cut_a or cut_b:
                    raise ValueError(f"prompt {p!r} does not fit model_max_length {self.t1.model_max_length}")
                self.cache[p] = (a, b)
            a, b = self.cache[p]
            rows1.append(a)
            rows2.append(b)
        return torch.tensor(rows1), torch.tensor(rows2)


# ---------------------------------------------------------------------------------------------------------------
# Data

def batch_of(rng, n, cfg_drop):
    """n fresh training scenes: images (n, 3, L, L) in [−1, 1] and prompts ("" for the CFG-dropped ones)."""
    imgs, prompts = np.empty((n, scenes.L, scenes.L, 3), np.uint8), []
    for i in range(n):
        spec = scenes.sample_spec(rng, held_out=False)
        imgs[i] = scenes.render(scenes.sample_scene(rng, spec))
        text = scenes.prompt_text(spec, rng)
        prompts.append("" if rng.random() < cfg_drop else text)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, prompts


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if os.path.exists(path):
        os.replace(path, path[:-3] + ".prev.pt")
    os.replace(tmp, path)


def load_checkpoint(path):
    """The checkpoint, or the previous one when the latest cannot be read (a crash while writing leaves the
    previous one intact; the .tmp is never read)."""
    errors = []
    for p in (path, path[:-3] + ".prev.pt"):
        if os.path.exists(p):
            try:
                try:
                    return torch.load(p, map_location="cpu", weights_only=False), p   # newer torch: not weights-only
                except TypeError:
                    return torch.load(p, map_location="cpu"), p
            except Exception as e:  # noqa: BLE001 — a truncated file raises several kinds of errors
                errors.append(f"{p}: {e}")
    raise FileNotFoundError(f"no readable checkpoint at {path} ({'; '.join(errors) or 'missing'})")


# ---------------------------------------------------------------------------------------------------------------
# Evaluation

def pipeline_of(model, t1, t2, shift, guidance, steps):
    from tools.sd3 import scheduler as sched
    return sd3pipe.Pipeline(model.transformer, model.text_encoder, t1, model.text_encoder_2, t2,
                            sched.default_config(shift), max_sequence_length=0,
                            defaults={"guidance_scale": guidance, "num_inference_steps": steps})


def evaluate(model, t1, t2, args, chunk=50):
    """Judge accuracy of the model's samples on the fixed eval set (forms in equal shares) and on held-out
    combinations; noise seeded per prompt index so that evaluations at different steps are comparable."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pipe = pipeline_of(model, t1, t2, args.eval_shift, args.eval_guidance, args.eval_steps)
    res = {}
    sets = {"main": scenes.eval_set(args.eval_n, args.eval_seed, held_out=False)}
    if args.eval_held_out:
        sets["held_out"] = scenes.eval_set(args.eval_held_out, args.eval_seed + 1, held_out=True)
    t0 = time.time()
    for name, prompts in sets.items():
        by_kind = {}
        for s in range(0, len(prompts), chunk):
            part = prompts[s:s + chunk]
            gen = torch.Generator().manual_seed(args.eval_seed + s + (0 if name == "main" else 10 ** 6))
            noise = torch.randn((len(part), 3, scenes.L, scenes.L), generator=gen)
            with torch.no_grad():
                imgs = pipe(part, noise=noise.to(device))
            for p, img in zip(part, imgs):
                kind = scenes.parse_prompt(p).kind
                ok, _ = scenes.judge(img, p)
                by_kind.setdefault(kind, []).append(ok)
        allv = [v for vs in by_kind.values() for v in vs]
        res[name] = round(float(np.mean(allv)), 4)
        if name == "main":
            for k, vs in by_kind.items():
                res[k] = round(float(np.mean(vs)), 4)
    res["seconds"] = round(time.time() - t0, 1)
    res.update(steps=args.eval_steps, guidance=args.eval_guidance, shift=args.eval_shift, n=args.eval_n,
               n_held_out=args.eval_held_out)
    model.train(was_training)
    return res


# ---------------------------------------------------------------------------------------------------------------
# Training

def lr_at(step, args, warm_from=0):
    """Linear warm-up over --warmup steps from warm_from (the start, or the step a fresh optimiser began at)."""
    return args.lr * min(1.0, (step - warm_from + 1) / max(1, args.warmup))


def build(args, ckpt=None):
    if ckpt is not None:
        arch = ckpt["arch"]
        t1, t2 = tokenizers_from(ckpt["vocab"], [tuple(m) for m in ckpt["merges"]], arch["max_length"])
    else:
        arch = {k: getattr(args, k) for k in ARCH_KEYS}
        t1, t2 = make_tokenizers(arch, args.seed)
    torch.manual_seed(args.seed)
    model = ShapesModel(arch, len(t1.encoder), token_ids_of(t1, t2))
    return arch, model, t1, t2


def make_optimizer(model, args):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.999))


class Trainer:
    def __init__(self, args):
        self.args = args
        self.dev = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available())
                                else ("cpu" if args.device == "auto" else args.device))
        if self.dev.type == "cpu":
            torch.set_num_threads(args.threads)
            torch.set_flush_denormal(True)
        else:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        os.makedirs(args.out, exist_ok=True)
        self.ckpt_path = os.path.join(args.out, "ckpt.pt")
        ckpt = None
        if args.resume or args.export or args.eval_only:
            ckpt, self.loaded_from = load_checkpoint(self.ckpt_path)
        self.arch, self.model, self.t1, self.t2 = build(args, ckpt)
        self.model.to(self.dev)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = make_optimizer(self.model, args)
        self.ids = IdCache(self.t1, self.t2)
        self.step, self.elapsed, self.samples = 0, 0.0, 0
        self.data_rng = np.random.default_rng(args.seed)
        self.noise_gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
        self.last_eval = None
        self.warm_from = 0
        if ckpt is None and args.init_from:
            self.init_from_folder(args.init_from)
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.ema.load_state_dict(ckpt["ema"])
            self.opt.load_state_dict(ckpt["opt"])
            self.step, self.elapsed, self.samples = ckpt["step"], ckpt["elapsed"], ckpt.get("samples", 0)
            self.data_rng.bit_generator.state = ckpt["data_rng"]
            self.noise_gen.set_state(ckpt["noise_rng"])
            self.last_eval = ckpt.get("last_eval")
            self.warm_from = ckpt.get("warm_from", 0)
        self.n_params = {k: sum(p.numel() for p in getattr(self.model, k).parameters())
                         for k in ("transformer", "text_encoder", "text_encoder_2")}

    def init_from_folder(self, path):
        """Weights (as both weights and EMA), tokenizers, architecture and step count from an exported folder."""
        from tools.sd3 import layout
        pipe = layout.load_pipeline(path)
        tc, cc = pipe.transformer.config, pipe.text_encoder.config
        self.arch = {"dim": tc["num_attention_heads"] * tc["attention_head_dim"], "depth": tc["num_layers"],
                     "heads": tc["num_attention_heads"], "patch": tc["patch_size"], "text_hidden": cc["hidden_size"],
                     "text_layers": cc["num_hidden_layers"], "text_heads": cc["num_attention_heads"],
                     "text_proj": cc["projection_dim"], "max_length": pipe.tokenizer.model_max_length,
                     "bpe_prompts": self.args.bpe_prompts}
        self.t1, self.t2 = tokenizers_from(pipe.tokenizer.encoder, pipe.tokenizer.merges, self.arch["max_length"])
        torch.manual_seed(self.args.seed)
        self.model = ShapesModel(self.arch, len(self.t1.encoder), token_ids_of(self.t1, self.t2))
        for name in ("transformer", "text_encoder", "text_encoder_2"):
            state = {k: v.float() for k, v in getattr(pipe, name).state_dict().items()}
            getattr(self.model, name).load_state_dict(state, strict=True)
        self.model.to(self.dev)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = make_optimizer(self.model, self.args)
        self.ids = IdCache(self.t1, self.t2)
        with open(os.path.join(path, "ditserve.json")) as f:
            info = json.load(f)
        self.step = int(info.get("trained_steps", 0))
        self.samples = int(info.get("trained_samples", 0))
        self.elapsed = float(info.get("training_seconds", 0))
        self.last_eval = info.get("last_eval")
        self.warm_from = self.step
        log = os.path.join(self.args.out, "log.jsonl")
        if not os.path.exists(log) and os.path.exists(os.path.join(path, LOG_FILE)):
            shutil.copyfile(os.path.join(path, LOG_FILE), log)     # one curve across machines
        # fresh data: the folder keeps no generator state, so the stream is reseeded by the step it resumes at
        self.data_rng = np.random.default_rng([self.args.seed, self.step])
        self.noise_gen = torch.Generator(device="cpu").manual_seed(self.args.seed + 1 + self.step)

    def state(self):
        return {"arch": self.arch, "vocab": self.t1.encoder, "merges": [list(m) for m in self.t1.merges],
                "model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "elapsed": self.elapsed, "samples": self.samples,
                "data_rng": self.data_rng.bit_generator.state, "noise_rng": self.noise_gen.get_state(),
                "args": vars(self.args), "last_eval": self.last_eval, "warm_from": self.warm_from}

    def save(self):
        save_checkpoint(self.ckpt_path, self.state())

    def log(self, rec, echo=False):
        with open(os.path.join(self.args.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        if echo and not self.args.quiet:
            print(json.dumps(rec), flush=True)

    def train_step(self):
        a = self.args
        x0, prompts = batch_of(self.data_rng, a.batch, a.cfg_drop)
        ids1, ids2 = self.ids(prompts)
        n = x0.shape[0]
        noise = torch.randn(x0.shape, generator=self.noise_gen)
        sigma = torch.sigmoid(a.sigma_mean + a.sigma_std * torch.randn(n, generator=self.noise_gen))
        x0, noise, sigma, ids1, ids2 = (t.to(self.dev) for t in (x0, noise, sigma, ids1, ids2))
        s = sigma[:, None, None, None]
        xt = s * noise + (1 - s) * x0
        m = self.model
        ctx, pooled = sd3pipe.encode_clip_ids(m.text_encoder, m.text_encoder_2, ids1, ids2,
                                              m.transformer.config["joint_attention_dim"], 0)
        v = m.transformer(xt, ctx, pooled, sigma * 1000.0)
        loss = (v.float() - (noise - x0)).pow(2).mean()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, a, self.warm_from)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(m.parameters(), a.clip_grad)
        self.opt.step()
        d = min(a.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            ep, mp = list(self.ema.parameters()), list(m.parameters())
            torch._foreach_mul_(ep, d)
            torch._foreach_add_(ep, mp, alpha=1 - d)
        self.step += 1
        self.samples += n
        return float(loss), float(gnorm)

    def run(self):
        a = self.args
        stop = {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        cfg_flops = mmdit.count_flops(self.model.transformer.config, self.arch["max_length"], 1)
        start = {"event": "start" if self.step == 0 else "resume", "step": self.step, "elapsed": self.elapsed,
                 "params": self.n_params, "transformer_gflops_per_sample_forward": round(cfg_flops / 1e9, 4),
                 "arch": self.arch, "args": vars(a), "device": str(self.dev), "threads": torch.get_num_threads(),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.log(start, echo=True)
        t_session = time.time()
        t_ckpt = t_eval = time.time()
        if a.eval_minutes and self.last_eval is None and self.step == 0:
            t_eval = time.time() - a.eval_minutes * 60 + 600          # first evaluation after 10 minutes
        losses, t_last = [], time.time()
        while self.step < a.steps:
            t0 = time.time()
            loss, gnorm = self.train_step()
            self.elapsed += time.time() - t0
            losses.append(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss {loss} at step {self.step}; last checkpoint kept")
            if self.step % a.log_every == 0:
                dt = time.time() - t_last
                rec = {"step": self.step, "loss": round(float(np.mean(losses)), 5), "grad_norm": round(gnorm, 4),
                       "lr": lr_at(self.step - 1, a, self.warm_from), "samples": self.samples, "elapsed": round(self.elapsed, 1),
                       "sec_per_step": round(dt / len(losses), 3)}
                self.log(rec, echo=True)
                losses, t_last = [], time.time()
            now = time.time()
            if a.eval_minutes and now - t_eval >= a.eval_minutes * 60:
                self.last_eval = {"step": self.step, **evaluate(self.ema, self.t1, self.t2, a)}
                self.log({"eval": self.last_eval}, echo=True)
                t_eval = time.time()
                t_last = time.time()
            if now - t_ckpt >= a.ckpt_minutes * 60:
                self.save()
                t_ckpt = time.time()
            if stop["signal"] is not None or (a.time_budget and time.time() - t_session >= a.time_budget):
                break
        self.save()
        end = {"event": "stopped", "step": self.step, "elapsed": round(self.elapsed, 1),
               "reason": f"signal {stop['signal']}" if stop["signal"] else "steps/time budget",
               "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.log(end, echo=True)


def grid(trainer, args, path, n=24, cols=6, scale=4):
    """A PNG of the EMA model's images for the first n eval prompts (same noise as evaluate), each with its
    prompt and the judge's verdict."""
    from PIL import Image, ImageDraw
    prompts = scenes.eval_set(args.eval_n, args.eval_seed, held_out=False)[:n]
    gen = torch.Generator().manual_seed(args.eval_seed)
    noise = torch.randn((len(prompts), 3, scenes.L, scenes.L), generator=gen)
    pipe = pipeline_of(trainer.ema, trainer.t1, trainer.t2, args.eval_shift, args.eval_guidance, args.eval_steps)
    imgs = pipe(prompts, noise=noise)
    tile, text_h, w = scenes.L * scale, 40, 190
    rows = (len(prompts) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * w, rows * (tile + text_h)), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for i, (p, img) in enumerate(zip(prompts, imgs)):
        x, y = (i % cols) * w, (i // cols) * (tile + text_h)
        canvas.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST), (x, y))
        ok, why = scenes.judge(img, p)
        words = p.split()
        half = (len(words) + 1) // 2
        draw.text((x + 2, y + tile + 2), " ".join(words[:half]), fill=(255, 255, 255))
        draw.text((x + 2, y + tile + 13), " ".join(words[half:]), fill=(255, 255, 255))
        draw.text((x + 2, y + tile + 25), "ok" if ok else why[:30], fill=(120, 220, 120) if ok else (230, 120, 120))
    canvas.save(path)
    return path


def export(trainer, out_dir, dtype, guidance, steps, shift):
    """Writes the pipeline folder of the EMA weights (tools/sd3/layout.py)."""
    from tools.sd3 import layout
    from tools.sd3 import scheduler as sched
    e = trainer.ema
    pipe = sd3pipe.Pipeline(e.transformer, e.text_encoder, trainer.t1, e.text_encoder_2, trainer.t2,
                            sched.default_config(shift), max_sequence_length=0,
                            defaults={"guidance_scale": guidance, "num_inference_steps": steps})
    extra = {"trained_steps": trainer.step, "trained_samples": trainer.samples,
             "training_seconds": round(trainer.elapsed), "last_eval": trainer.last_eval}
    path = layout.write_pipeline(out_dir, pipe, dtype=dtype, ditserve=extra)
    # the recipe, so that --init-from continues it unchanged on a machine that has only this folder
    recipe = {k: v for k, v in vars(trainer.args).items() if k not in RUN_CONTROL}
    with open(os.path.join(out_dir, TRAINING_FILE), "w") as f:
        json.dump({"args": recipe, "step": trainer.step}, f, indent=1, sort_keys=True)
        f.write("\n")
    _thin_log(os.path.join(trainer.args.out, "log.jsonl"), os.path.join(out_dir, LOG_FILE))
    return path


def _thin_log(src, dst, every=50):
    """The run's log for the folder: every event and evaluation, and every `every`-th step record (loss curve)."""
    if not os.path.exists(src):
        return
    with open(src) as f, open(dst + ".tmp", "w") as g:
        for line in f:
            rec = json.loads(line)
            if "step" not in rec or "loss" not in rec or rec["step"] % every == 0:
                g.write(line)
    os.replace(dst + ".tmp", dst)


def main(argv=None):
    args = parse_args(argv)
    if args.resume or args.export or args.eval_only:
        ckpt, _ = load_checkpoint(os.path.join(args.out, "ckpt.pt"))
        args = resume_args(args, ckpt.get("args", {}), explicit_options(argv if argv is not None else sys.argv[1:]))
        del ckpt
    elif args.init_from and os.path.exists(os.path.join(args.init_from, TRAINING_FILE)):
        with open(os.path.join(args.init_from, TRAINING_FILE)) as f:
            saved = json.load(f)["args"]
        args = resume_args(args, saved, explicit_options(argv if argv is not None else sys.argv[1:]))
    tr = Trainer(args)
    if args.export:
        path = export(tr, args.export, args.export_dtype, args.eval_guidance, args.eval_steps, args.eval_shift)
        print(json.dumps({"exported": path, "step": tr.step, "from": tr.loaded_from}))
        return
    if args.eval_only:
        print(json.dumps({"step": tr.step, **evaluate(tr.ema, tr.t1, tr.t2, args)}))
        if args.grid:
            grid(tr, args, args.grid)
        return
    tr.run()


if __name__ == "__main__":
    main()
