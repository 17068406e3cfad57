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
from tools.sd3 import clip_bpe, layout  # noqa: E402
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


if __name__ == "__main__":
    unittest.main()
