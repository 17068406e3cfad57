"""tools/text: the prompt corpus is deterministic and covers its categories, and the committed expected token ids
(tools/fixtures/tokenizers/expected.json.gz) are what the references give today.

  /usr/bin/python3 -m unittest tools/tests/test_text_fixtures.py -v
"""
import gzip
import json
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.sd3 import clip_bpe, layout, t5_encoder  # noqa: E402
from tools.text import make_encoder_fixtures, make_tokenizer_fixtures, prompt_corpus  # noqa: E402

FIXTURES = os.path.join(ROOT, "tools", "fixtures", "tokenizers")


class PromptCorpusTest(unittest.TestCase):
    def test_deterministic_and_varied(self):
        a, b = prompt_corpus.prompts(), prompt_corpus.prompts()
        self.assertEqual(a, b)
        self.assertGreaterEqual(len(a), 1000)
        text = "".join(a)
        for needle in ("é", "猫", "🐱", "\t", "\u3000", "<|endoftext|>", "</s>", "&amp;", "½", "ſ"):
            self.assertIn(needle, text)
        self.assertGreater(max(map(len, a)), 1500)
        self.assertIn("", a)
        cats = prompt_corpus.categories(len(a))
        self.assertEqual(len(cats), len(a))
        self.assertEqual(set(cats) - {"fixed"}, {name for name, _ in prompt_corpus.CATEGORIES})

    def test_no_lone_surrogates(self):
        for p in prompt_corpus.prompts():
            p.encode("utf-8")


class ExpectedIdsTest(unittest.TestCase):
    def test_committed_ids_are_the_references(self):
        with gzip.open(os.path.join(FIXTURES, "expected.json.gz")) as f:
            committed = json.load(f)
        prompts = prompt_corpus.prompts()
        self.assertEqual(committed["prompts"], prompts)
        fresh = make_tokenizer_fixtures.expected(prompts, os.path.join(FIXTURES, "clip"), os.path.join(FIXTURES, "t5"))
        for name in ("clip", "t5"):
            self.assertEqual(committed[name], fresh[name], name)
        self.assertGreater(sum(committed["clip"]["truncated"]), 0)
        self.assertGreater(sum(committed["t5"]["truncated"]), 0)


class EncoderFixturesTest(unittest.TestCase):
    """The committed CLIP fixtures (tools/text/make_encoder_fixtures.py) are what the reference computes from them."""

    def test_cases_reproduce(self):
        import torch
        torch.set_num_threads(1)
        for name in make_encoder_fixtures.CONFIGS:
            folder = os.path.join(ROOT, "tools", "fixtures", name)
            model, _ = layout.read_clip(folder)
            cases, _ = layout.read_safetensors(os.path.join(folder, "cases.safetensors"))
            tok = clip_bpe.CLIPTokenizer.from_dir(os.path.join(folder, "tokenizer"))
            ids = torch.tensor([tok(p)[0] for p in make_encoder_fixtures.PROMPTS])
            self.assertTrue(torch.equal(ids, cases["ids"]), name)
            with torch.no_grad():
                out = model(ids)
            for key, ref in (("hidden", out["penultimate"]), ("last", out["last_hidden_state"]),
                             ("text_embeds", out["text_embeds"])):
                err = (ref - cases[key]).abs().max() / cases[key].abs().max()
                self.assertLess(float(err), 1e-5, f"{name} {key}")


class T5ReferenceTest(unittest.TestCase):
    """tools/sd3/t5_encoder.py against an independent float64 loop over the architecture, its buckets against
    values worked out by hand, and the committed t5-tiny fixture."""

    def test_buckets(self):
        import torch
        rel = torch.tensor([0, -1, 1, -7, 7, -8, 8, -11, -12, -16, -127, -128, -1000, 1000])
        got = t5_encoder.relative_buckets(rel, 32, 128).tolist()
        # |rel| < 8 exact; else 8 + floor(log(|rel|/8)/log(16)·8): 11 → 8.9 → 8, 12 → 9.2 → 9, 16 → 10, 127 → 15.97
        self.assertEqual(got, [0, 1, 17, 7, 23, 8, 24, 8, 9, 10, 15, 15, 15, 31])

    def test_forward_equals_a_float64_loop(self):
        import math
        import torch
        torch.manual_seed(0)
        cfg = dict(vocab_size=50, d_model=12, d_kv=5, d_ff=10, num_layers=2, num_heads=3,
                   relative_attention_num_buckets=8, relative_attention_max_distance=10)
        m = t5_encoder.init_weights(t5_encoder.T5EncoderModel(**cfg))
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, t5_encoder.T5LayerNorm):
                    mod.weight.uniform_(0.5, 1.5)
        ids = torch.randint(0, 50, (2, 9))
        with torch.no_grad():
            ref = m(ids)["last_hidden_state"].double()
        p = {k: v.double() for k, v in m.state_dict().items()}

        def rms(x, w):
            return [w[i] * x[i] / math.sqrt(sum(v * v for v in x) / len(x) + 1e-6) for i in range(len(x))]

        def mat(w, x):
            return [sum(w[o][i] * x[i] for i in range(len(x))) for o in range(len(w))]

        def bucket(r):
            half, exact = 4, 2
            b = half if r > 0 else 0
            n = abs(r)
            if n < exact:
                return b + n
            return b + min(exact + int(math.log(n / exact) / math.log(10 / exact) * (half - exact)), half - 1)

        table = p["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        for b in range(2):
            xs = [p["shared.weight"][int(t)].tolist() for t in ids[b]]
            for i in range(2):
                pre = f"encoder.block.{i}.layer."
                hs = [rms(x, p[pre + "0.layer_norm.weight"].tolist()) for x in xs]
                q = [mat(p[pre + "0.SelfAttention.q.weight"].tolist(), h) for h in hs]
                k = [mat(p[pre + "0.SelfAttention.k.weight"].tolist(), h) for h in hs]
                v = [mat(p[pre + "0.SelfAttention.v.weight"].tolist(), h) for h in hs]
                att = [[0.0] * 15 for _ in xs]
                for hd in range(3):
                    sl = slice(5 * hd, 5 * hd + 5)
                    for a in range(9):
                        sc = [sum(x * y for x, y in zip(q[a][sl], k[c][sl])) + float(table[bucket(c - a)][hd])
                              for c in range(9)]
                        mx = max(sc)
                        e = [math.exp(z - mx) for z in sc]
                        tot = sum(e)
                        for c in range(9):
                            for j in range(5):
                                att[a][5 * hd + j] += e[c] / tot * v[c][sl][j]
                o = [mat(p[pre + "0.SelfAttention.o.weight"].tolist(), a) for a in att]
                xs = [[x + y for x, y in zip(xx, oo)] for xx, oo in zip(xs, o)]
                hs = [rms(x, p[pre + "1.layer_norm.weight"].tolist()) for x in xs]
                out = []
                for h in hs:
                    g0 = mat(p[pre + "1.DenseReluDense.wi_0.weight"].tolist(), h)
                    g1 = mat(p[pre + "1.DenseReluDense.wi_1.weight"].tolist(), h)
                    u = [0.5 * a * (1 + math.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))) * c
                         for a, c in zip(g0, g1)]
                    out.append(mat(p[pre + "1.DenseReluDense.wo.weight"].tolist(), u))
                xs = [[x + y for x, y in zip(xx, oo)] for xx, oo in zip(xs, out)]
            final = torch.tensor([rms(x, p["encoder.final_layer_norm.weight"].tolist()) for x in xs])
            self.assertLess(float((final - ref[b]).abs().max()), 1e-4)

    def test_tied_embedding_and_fixture(self):
        import torch
        torch.set_num_threads(1)
        folder = os.path.join(ROOT, "tools", "fixtures", "t5-tiny")
        state, _ = layout.read_weights(folder, "model")
        self.assertNotIn("encoder.embed_tokens.weight", state)
        model = t5_encoder.T5EncoderModel(**make_encoder_fixtures.T5_CONFIG)
        tied = dict(state)
        tied["encoder.embed_tokens.weight"] = tied.pop("shared.weight")
        t5_encoder.load_weights(model, tied)
        cases, _ = layout.read_safetensors(os.path.join(folder, "cases.safetensors"))
        with torch.no_grad():
            out = model(cases["ids"])["last_hidden_state"]
        err = (out - cases["last_hidden_state"]).abs().max() / cases["last_hidden_state"].abs().max()
        self.assertLess(float(err), 1e-5)
        rel = torch.arange(-600, 601)
        self.assertTrue(torch.equal(t5_encoder.relative_buckets(rel, 32, 128), cases["buckets"]))


if __name__ == "__main__":
    unittest.main()
