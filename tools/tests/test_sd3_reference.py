"""tools/sd3: the SD3 references (MMDiT, CLIP text, CLIP BPE, T5 context, VAE decode, scheduler, pipeline, folder
layout), tested against themselves at small random configurations (issue 24 item 5).

  OPENBLAS_CORETYPE=Haswell /usr/bin/python3 -m unittest tools/tests/test_sd3_reference.py -v
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.sd3 import clip_bpe, clip_text, layout, make_random_sd3, mmdit  # noqa: E402
from tools.sd3 import pipeline as sd3pipe  # noqa: E402
from tools.sd3 import scheduler as sched  # noqa: E402

torch.set_num_threads(1)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def random_pipe(*extra):
    return make_random_sd3.build(make_random_sd3.parse_args(["--out", "unused", *extra]))


def small_transformer(**kw):
    cfg = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
               joint_attention_dim=24, caption_projection_dim=16, pooled_projection_dim=12, out_channels=4,
               pos_embed_max_size=8, dual_attention_layers=[], qk_norm=None)
    cfg.update(kw)
    torch.manual_seed(0)
    m = mmdit.SD3Transformer2DModel(**cfg).eval()
    make_random_sd3.perturb_norms(m, torch.Generator().manual_seed(1))
    return m


class SchedulerTest(unittest.TestCase):
    def test_sd3_sigmas_28_steps(self):
        # docs/TEXT_MODELS.md: "For N = 28, σ runs 1.0, 0.98738, 0.97411 … 0.19983, 0.11091, 0.008929, then 0."
        s = sched.sigmas(28, shift=3.0)
        self.assertEqual(len(s), 29)
        np.testing.assert_allclose(s[:3], [1.0, 0.98738, 0.97411], atol=5e-6)
        np.testing.assert_allclose(s[-4:], [0.19983, 0.11091, 0.008929, 0.0], atol=5e-6)
        self.assertTrue(np.all(np.diff(s) < 0))

    def test_shift_one_is_linear(self):
        s = sched.sigmas(5, shift=1.0)
        np.testing.assert_allclose(s[:-1], np.linspace(1.0, 0.001, 5), atol=1e-6)

    def test_euler_step(self):
        x, v = torch.ones(2), torch.full((2,), 2.0)
        np.testing.assert_allclose(sched.euler_step(x, v, 0.75, 0.5).numpy(), [0.5, 0.5])


class TokenizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.corpus = make_random_sd3.CORPUS
        vocab, merges = clip_bpe.train_bpe(cls.corpus * 3, num_merges=300)
        cls.tok = clip_bpe.CLIPTokenizer(vocab, merges, 16)

    def test_vocab_layout_like_clip(self):
        v = self.tok.encoder
        self.assertEqual(v["!"], 0)                                  # bytes_to_unicode order
        self.assertEqual(v["!</w>"], 256)
        self.assertEqual(v[clip_bpe.BOS], len(v) - 2)
        self.assertEqual(v[clip_bpe.EOS], len(v) - 1)
        self.assertEqual(len(set(clip_bpe.bytes_to_unicode().values())), 256)

    def test_round_trip_and_words(self):
        for text in self.corpus:
            ids = self.tok.encode(text)
            self.assertEqual(self.tok.decode(ids), " ".join(clip_bpe.pre_tokenize(clip_bpe.clean_text(text))))
        self.assertEqual(self.tok.tokenize("the lazy dog"), ["the</w>", "lazy</w>", "dog</w>"])

    def test_cleanup_case_and_whitespace(self):
        self.assertEqual(self.tok.encode("  The\tQUICK \n fox "), self.tok.encode("the quick fox"))
        self.assertEqual(clip_bpe.clean_text("a\x00b\u200bc"), "abc")         # NUL and a Cf character dropped
        self.assertEqual(clip_bpe.clean_text("e\u0301"), "\u00e9")              # NFC
        self.assertEqual(clip_bpe.clean_text("日本"), "日 本")                   # CJK spaced (no-ftfy path)

    def test_pad_and_truncate(self):
        ids, cut = self.tok("a red cube")
        self.assertFalse(cut)
        self.assertEqual(len(ids), 16)
        self.assertEqual(ids[0], self.tok.bos_token_id)
        n = len(self.tok.encode("a red cube"))
        self.assertEqual(ids[n + 1], self.tok.eos_token_id)
        self.assertEqual(ids[n + 2:], [self.tok.pad_token_id] * (16 - n - 2))
        long_ids, cut = self.tok(" ".join(["fox"] * 40))
        self.assertTrue(cut)
        self.assertEqual(len(long_ids), 16)
        self.assertEqual(long_ids[-1], self.tok.eos_token_id)
        self.assertEqual(long_ids[1:15], self.tok.encode(" ".join(["fox"] * 14)))
        self.assertEqual(self.tok("")[0][:2], [self.tok.bos_token_id, self.tok.eos_token_id])

    def test_unicode_bytes_and_specials(self):
        text = "naïve café ☃ <|endoftext|> x"
        toks = self.tok.tokenize(text)
        self.assertIn(clip_bpe.EOS, toks)
        self.assertEqual(self.tok.decode(self.tok.encode("naïve café ☃")), "naïve café ☃")

    def test_files_reload(self):
        d = tempfile.mkdtemp()
        try:
            t2 = clip_bpe.CLIPTokenizer(self.tok.encoder, self.tok.merges, 16, pad_token="!")
            t2.save(d)
            with open(os.path.join(d, "merges.txt")) as f:
                self.assertTrue(f.readline().startswith("#version"))
            back = clip_bpe.CLIPTokenizer.from_dir(d)
            self.assertEqual(back.pad_token_id, 0)
            self.assertEqual(back.model_max_length, 16)
            for text in self.corpus:
                self.assertEqual(back(text), t2(text))
        finally:
            shutil.rmtree(d)


class ClipTextTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        pipe = random_pipe("--max-length", "12")
        cls.te, cls.tok = pipe.text_encoder, pipe.tokenizer

    def test_names_and_shapes(self):
        names = set(self.te.state_dict())
        for n in ("text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
                  "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.self_attn.out_proj.bias",
                  "text_model.encoder.layers.0.layer_norm1.weight", "text_model.encoder.layers.0.layer_norm2.bias",
                  "text_model.encoder.layers.1.mlp.fc1.weight", "text_model.encoder.layers.1.mlp.fc2.bias",
                  "text_model.final_layer_norm.weight", "text_projection.weight"):
            self.assertIn(n, names)
        self.assertNotIn("text_projection.bias", names)
        ids = torch.tensor(self.tok.batch(["a red cube", "the fox"]))
        out = self.te(ids)
        self.assertEqual(len(out["hidden_states"]), 1 + self.te.config["num_hidden_layers"])
        self.assertTrue(torch.equal(out["penultimate"], out["hidden_states"][-2]))
        self.assertEqual(tuple(out["text_embeds"].shape), (2, self.te.config["projection_dim"]))

    def test_pooled_is_first_eos_both_conventions(self):
        ids = torch.tensor(self.tok.batch(["a red cube", "the quick brown fox"]))
        out = self.te(ids)
        for row in range(2):
            pos = ids[row].tolist().index(self.tok.eos_token_id)
            self.assertTrue(torch.equal(out["pooled"][row], out["last_hidden_state"][row, pos]))
        self.te.config["eos_token_id"] = 2          # legacy: argmax of the ids
        try:
            self.assertTrue(torch.equal(self.te(ids)["pooled"], out["pooled"]))
        finally:
            self.te.config["eos_token_id"] = self.tok.eos_token_id

    def test_causal(self):
        a = torch.tensor(self.tok.batch(["a red cube left of a ball"]))
        b = a.clone()
        b[0, 4:] = 5
        ha, hb = self.te(a)["hidden_states"][-1], self.te(b)["hidden_states"][-1]
        torch.testing.assert_close(ha[0, :4], hb[0, :4])
        self.assertFalse(torch.allclose(ha[0, 4:], hb[0, 4:]))


class MMDiTTest(unittest.TestCase):
    def test_state_dict_names(self):
        m = small_transformer(dual_attention_layers=[0], qk_norm="rms_norm")
        names = set(m.state_dict())
        for n in ("pos_embed.pos_embed", "pos_embed.proj.weight", "time_text_embed.timestep_embedder.linear_1.weight",
                  "time_text_embed.timestep_embedder.linear_2.bias", "time_text_embed.text_embedder.linear_1.weight",
                  "time_text_embed.text_embedder.linear_2.weight", "context_embedder.weight",
                  "transformer_blocks.0.norm1.linear.weight", "transformer_blocks.0.norm1_context.linear.weight",
                  "transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.add_k_proj.bias",
                  "transformer_blocks.0.attn.to_out.0.weight", "transformer_blocks.0.attn.to_add_out.weight",
                  "transformer_blocks.0.attn.norm_q.weight", "transformer_blocks.0.attn.norm_added_k.weight",
                  "transformer_blocks.0.attn2.to_q.weight", "transformer_blocks.0.attn2.norm_k.weight",
                  "transformer_blocks.0.attn2.to_out.0.bias", "transformer_blocks.0.ff.net.0.proj.weight",
                  "transformer_blocks.0.ff.net.2.weight", "transformer_blocks.0.ff_context.net.2.bias",
                  "transformer_blocks.2.norm1_context.linear.weight", "norm_out.linear.weight", "proj_out.weight"):
            self.assertIn(n, names)
        self.assertEqual(tuple(m.state_dict()["transformer_blocks.0.norm1.linear.weight"].shape), (9 * 16, 16))
        self.assertEqual(tuple(m.state_dict()["transformer_blocks.1.norm1.linear.weight"].shape), (6 * 16, 16))
        self.assertEqual(tuple(m.state_dict()["transformer_blocks.2.norm1_context.linear.weight"].shape), (32, 16))
        for gone in ("transformer_blocks.2.attn.to_add_out.weight", "transformer_blocks.2.ff_context.net.0.proj.weight",
                     "transformer_blocks.1.attn2.to_q.weight"):
            self.assertNotIn(gone, names)
        self.assertEqual(tuple(m.pos_embed.pos_embed.shape), (1, 64, 16))

    def test_forward_shape_and_unpatchify(self):
        m = small_transformer()
        x = torch.randn(2, 4, 8, 12)
        out = m(x, torch.randn(2, 5, 24), torch.randn(2, 12), torch.tensor([1000.0, 3.0]))
        self.assertEqual(tuple(out.shape), (2, 4, 8, 12))
        p = 2
        tokens = x.reshape(2, 4, 4, p, 6, p).permute(0, 2, 4, 3, 5, 1).reshape(2, 24, p * p * 4)
        torch.testing.assert_close(m.unpatchify(tokens, 4, 6), x)

    def test_pos_embed_crop(self):
        m = small_transformer()
        self.assertEqual(m.pos_embed.crop_offsets(4, 4), (2, 2))
        self.assertEqual(m.pos_embed.crop_offsets(3, 6), (2, 1))
        table = m.pos_embed.pos_embed.reshape(8, 8, 16)
        torch.testing.assert_close(m.pos_embed.cropped_pos_embed(3, 6).reshape(3, 6, 16), table[2:5, 1:7])
        # the sin-cos formula: column coordinate in the first half, row in the second; coordinate = index·base/max
        base = 8 // 2
        r, c, k = 5, 3, 1
        w = 1.0 / 10000 ** (k / 4.0)
        self.assertAlmostEqual(float(table[r, c, k]), np.sin(c * base / 8 * w), places=5)
        self.assertAlmostEqual(float(table[r, c, 4 + k]), np.cos(c * base / 8 * w), places=5)
        self.assertAlmostEqual(float(table[r, c, 8 + k]), np.sin(r * base / 8 * w), places=5)
        # a model whose table is the crop gives the same output
        small = small_transformer(pos_embed_max_size=4)
        state = m.state_dict()
        state["pos_embed.pos_embed"] = m.pos_embed.cropped_pos_embed(4, 4)
        small.load_state_dict(state)
        args = (torch.randn(1, 4, 8, 8), torch.randn(1, 3, 24), torch.randn(1, 12), torch.tensor([500.0]))
        torch.testing.assert_close(small(*args), m(*args))
        with self.assertRaises(ValueError):
            m(torch.randn(1, 4, 18, 18), *args[1:])

    def test_joint_attention_equals_separate_softmax_merge(self):
        torch.manual_seed(3)
        att = mmdit.Attention(16, 2, 8, added=True, qk_norm="rms_norm")
        make_random_sd3.perturb_norms(att, torch.Generator().manual_seed(2))
        x, c = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
        img, ctx = att(x, c)

        def heads(t):
            return t.reshape(2, -1, 2, 8).transpose(1, 2)
        q = torch.cat([att.norm_q(heads(att.to_q(x))), att.norm_added_q(heads(att.add_q_proj(c)))], 2)
        ki, vi = att.norm_k(heads(att.to_k(x))), heads(att.to_v(x))
        kc, vc = att.norm_added_k(heads(att.add_k_proj(c))), heads(att.add_v_proj(c))
        # attention over image keys and over context keys separately, merged by their log-sum-exps
        si, sc = q @ ki.transpose(-1, -2) / 8 ** 0.5, q @ kc.transpose(-1, -2) / 8 ** 0.5
        li, lc = si.logsumexp(-1, keepdim=True), sc.logsumexp(-1, keepdim=True)
        lt = torch.logaddexp(li, lc)
        o = torch.exp(li - lt) * (si.softmax(-1) @ vi) + torch.exp(lc - lt) * (sc.softmax(-1) @ vc)
        o = o.transpose(1, 2).reshape(2, 10, 16)
        torch.testing.assert_close(img, att.to_out[0](o[:, :6]))
        torch.testing.assert_close(ctx, att.to_add_out(o[:, 6:]))

    def test_zero_gates_make_blocks_identity(self):
        m = small_transformer()
        mmdit.init_weights(m)            # adaLN-Zero: every block the identity, the output zero
        out = m(torch.randn(1, 4, 8, 8), torch.randn(1, 3, 24), torch.randn(1, 12), torch.tensor([10.0]))
        self.assertEqual(float(out.abs().max()), 0.0)

    def test_gelu_tanh_form(self):
        x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
        ref = 0.5 * x * (1 + torch.tanh((2 / np.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
        torch.testing.assert_close(mmdit.gelu_tanh(x), ref, rtol=1e-12, atol=1e-12)

    def test_timestep_sinusoid_cos_first(self):
        e = mmdit.timestep_sinusoid(torch.tensor([2.0]))
        self.assertAlmostEqual(float(e[0, 0]), np.cos(2.0), places=6)
        self.assertAlmostEqual(float(e[0, 128]), np.sin(2.0), places=6)
        self.assertAlmostEqual(float(e[0, 1]), np.cos(2.0 * np.exp(-np.log(10000) / 128)), places=6)


class PipelineAndLayoutTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_context_assembly_and_cfg(self):
        pipe = random_pipe("--max-length", "10", "--max-sequence-length", "6", "--joint-attention-dim", "96")
        ctx, pooled = pipe.encode_prompt(["a red cube"])
        self.assertEqual(tuple(ctx.shape), (1, 10 + 6, 96))
        self.assertEqual(float(ctx[:, :, 80:].abs().max()), 0.0)      # padded to joint_attention_dim
        self.assertEqual(float(ctx[:, 10:].abs().max()), 0.0)         # no T5: zeros
        self.assertEqual(tuple(pooled.shape), (1, 80))
        noise = torch.randn(1, 16, 8, 8)
        cond = pipe.sample(["a red cube"], guidance_scale=1.0, num_inference_steps=3, noise=noise)
        guided = pipe.sample(["a red cube"], guidance_scale=3.0, num_inference_steps=3, noise=noise)
        # by hand: [negative, positive] batch, v = v_u + g(v_c − v_u)
        nctx, npooled = pipe.encode_prompt([""])
        x = noise.clone()
        s = pipe.sigmas(3)
        for i in range(3):
            t = torch.full((1,), float(s[i]) * 1000)
            vu = pipe.transformer(x, nctx, npooled, t)
            vc = pipe.transformer(x, ctx, pooled, t)
            x = x + (float(s[i + 1]) - float(s[i])) * (vu + 3.0 * (vc - vu))
        torch.testing.assert_close(guided, x, rtol=1e-4, atol=1e-5)
        self.assertFalse(torch.allclose(cond, guided))

    def _roundtrip(self, *extra, dtype="fp32"):
        pipe = random_pipe(*[e for e in extra if e != "--shard"], "--dtype", dtype)
        out = os.path.join(self.dir, "p")
        layout.write_pipeline(out, pipe, dtype=dtype, shard_bytes=20000 if "--shard" in extra else None)
        back = layout.load_pipeline(out)
        for comp in ("transformer", "text_encoder", "text_encoder_2"):
            a, b = getattr(pipe, comp).state_dict(), getattr(back, comp).state_dict()
            self.assertEqual(set(a), set(b), comp)
            for k in a:
                want = a[k]
                if dtype == "fp16":
                    want = want.half().float()
                elif dtype == "bf16":
                    want = torch.from_numpy(
                        (layout._bf16_bits(want.float().numpy()).astype(np.uint32) << 16).view(np.float32))
                torch.testing.assert_close(b[k], want.reshape(b[k].shape), rtol=0, atol=0, msg=f"{comp} {k}")
        self.assertEqual(pipe.tokenizer.encoder, back.tokenizer.encoder)
        self.assertEqual(back.tokenizer_2.pad_token, "!")
        self.assertEqual(back.max_sequence_length, pipe.max_sequence_length)
        self.assertEqual(back.transformer.config, pipe.transformer.config)
        return pipe, back, out

    def test_fp32_folder_reloads_identically(self):
        pipe, back, out = self._roundtrip("--qk-norm", "--dual-attention-layers", "0,1")
        idx = read_json(os.path.join(out, "model_index.json"))
        self.assertEqual(idx["_class_name"], "StableDiffusion3Pipeline")
        self.assertEqual(idx["transformer"], ["diffusers", "SD3Transformer2DModel"])
        self.assertEqual(idx["vae"], [None, None])
        cfg = read_json(os.path.join(out, "transformer", "config.json"))
        for k in ("sample_size", "patch_size", "in_channels", "num_layers", "attention_head_dim", "num_attention_heads",
                  "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim", "out_channels",
                  "pos_embed_max_size", "dual_attention_layers", "qk_norm", "_class_name", "_diffusers_version"):
            self.assertIn(k, cfg)
        self.assertTrue(os.path.exists(os.path.join(out, "transformer", "diffusion_pytorch_model.safetensors")))
        self.assertTrue(os.path.exists(os.path.join(out, "text_encoder", "model.safetensors")))
        noise = torch.randn(2, 16, 8, 8)
        a = pipe.sample(["a red cube", "the fox"], negative_prompt="blurry", num_inference_steps=2, noise=noise)
        b = back.sample(["a red cube", "the fox"], negative_prompt="blurry", num_inference_steps=2, noise=noise)
        self.assertTrue(torch.equal(a, b))

    def test_sharded_fp16_and_bf16(self):
        _, back, out = self._roundtrip("--shard", dtype="fp16")
        index = read_json(os.path.join(out, "transformer", "diffusion_pytorch_model.safetensors.index.json"))
        self.assertGreater(len(set(index["weight_map"].values())), 1)
        self.assertEqual(set(index["weight_map"]), set(back.transformer.state_dict()))
        shutil.rmtree(out)
        _, _, out = self._roundtrip("--qk-norm", dtype="bf16")
        _, dtypes = layout.read_weights(os.path.join(out, "transformer"), "diffusion_pytorch_model")
        self.assertEqual(set(dtypes.values()), {"BF16"})

    def test_bf16_rounding_nearest_even(self):
        vals = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38], np.float32)
        bits = layout._bf16_bits(vals)
        back = (bits.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(back[:4], [1.0, 1.0, 1.015625, -2.5])   # ties to even

    def test_t5_context_part_and_drop(self):
        pipe = random_pipe("--max-length", "10", "--max-sequence-length", "6", "--joint-attention-dim", "96", "--t5")
        ctx, _ = pipe.encode_prompt(["a red cube"])
        self.assertEqual(tuple(ctx.shape), (1, 10 + 6, 96))
        ids, cut = pipe.t5_ids(["a red cube"])
        raw = pipe.tokenizer_3.sp.encode("a red cube")
        self.assertEqual(ids[0].tolist(), raw + [1] + [0] * (6 - len(raw) - 1))   # ids, </s>, <pad>; no BOS
        self.assertEqual(cut, [False])
        t5 = pipe.text_encoder_3(ids)["last_hidden_state"]
        self.assertTrue(torch.equal(ctx[:, 10:], t5))                            # T5 follows on the sequence axis
        self.assertEqual(float(ctx[:, :10, 80:].abs().max()), 0.0)               # CLIP zero-padded to T5's width
        long_ids, long_cut = pipe.t5_ids(["the quick brown fox " * 5])
        self.assertEqual((long_ids[0, -1].item(), long_cut), (1, [True]))        # cut at 5, then </s>
        pipe.text_encoder_3 = pipe.tokenizer_3 = None                            # diffusers' text_encoder_3=None
        ctx0, _ = pipe.encode_prompt(["a red cube"])
        self.assertEqual(float(ctx0[:, 10:].abs().max()), 0.0)
        self.assertTrue(torch.equal(ctx0[:, :10], ctx[:, :10]))

    def test_vae_decode_by_hand(self):
        for post in (False, True):
            pipe = random_pipe("--vae", "--in-channels", "16", *(["--vae-post-quant-conv"] if post else []))
            self.assertEqual(pipe.vae_scale_factor, 4)
            x = torch.randn(2, 16, 8, 8)
            z = x / 1.5305 + 0.0609
            if post:
                z = pipe.vae.post_quant_conv(z)
            else:
                self.assertIsNone(pipe.vae.post_quant_conv)
            torch.testing.assert_close(pipe.decode(x), pipe.vae.decoder(z), rtol=0, atol=0)
            self.assertEqual(tuple(pipe.decode(x).shape), (2, 3, 32, 32))

    def test_t5_and_vae_folder_reloads_identically(self):
        pipe = random_pipe("--t5", "--vae", "--in-channels", "16", "--max-sequence-length", "7", "--dtype", "fp32")
        out = os.path.join(self.dir, "full")
        layout.write_pipeline(out, pipe, t5_dtype="fp16")
        idx = read_json(os.path.join(out, "model_index.json"))
        self.assertEqual(idx["text_encoder_3"], ["transformers", "T5EncoderModel"])
        self.assertEqual(idx["tokenizer_3"], ["transformers", "T5TokenizerFast"])
        self.assertEqual(idx["vae"], ["diffusers", "AutoencoderKL"])
        vcfg = read_json(os.path.join(out, "vae", "config.json"))
        self.assertEqual((vcfg["latent_channels"], vcfg["use_post_quant_conv"], vcfg["use_quant_conv"],
                          vcfg["scaling_factor"], vcfg["shift_factor"]), (16, False, False, 1.5305, 0.0609))
        self.assertFalse(read_json(os.path.join(out, "ditserve.json"))["pixel_space"])
        self.assertTrue(os.path.exists(os.path.join(out, "tokenizer_3", "spiece.model")))
        back = layout.load_pipeline(out)
        _, dtypes = layout.read_weights(os.path.join(out, "text_encoder_3"), "model")
        self.assertEqual(set(dtypes.values()), {"F16"})
        for k, v in pipe.text_encoder_3.state_dict().items():
            self.assertTrue(torch.equal(back.text_encoder_3.state_dict()[k], v.half().float()), k)
        for k, v in pipe.vae.state_dict().items():
            self.assertTrue(torch.equal(back.vae.state_dict()[k], v), k)
        noise = torch.randn(1, 16, 8, 8)
        pipe.text_encoder_3 = back.text_encoder_3                     # the fp16-rounded weights on both sides
        a = pipe(["a red cube"], negative_prompt="blurry", num_inference_steps=2, noise=noise)
        b = back(["a red cube"], negative_prompt="blurry", num_inference_steps=2, noise=noise)
        self.assertEqual(a.shape, (1, 32, 32, 3))
        self.assertTrue(np.array_equal(a, b))
        dropped = layout.load_pipeline(out, drop_t5=True)
        self.assertIsNone(dropped.text_encoder_3)
        c = dropped(["a red cube"], negative_prompt="blurry", num_inference_steps=2, noise=noise)
        self.assertFalse(np.array_equal(a, c))

    def test_vae_without_pixel_space_flag_is_refused(self):
        pipe = random_pipe()
        out = os.path.join(self.dir, "q")
        layout.write_pipeline(out, pipe)       # pixel space: no vae/
        serve = read_json(os.path.join(out, "ditserve.json"))
        serve["pixel_space"] = False
        with open(os.path.join(out, "ditserve.json"), "w") as f:
            json.dump(serve, f)
        with self.assertRaises(ValueError):
            layout.load_pipeline(out)

if __name__ == "__main__":
    unittest.main()
