"""Tokenizer fixtures (issue 24 items 2 and 5): a CLIP BPE vocabulary and a T5 SentencePiece unigram model trained
here (no released vocabulary can be downloaded), in the layouts diffusers' tokenizer folders have, and the token
ids the references give for every prompt of tools/text/prompt_corpus.py.

  tools/fixtures/tokenizers/clip/   vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
                                    (CLIPTokenizer; trained with tools/sd3/clip_bpe.py's trainer: 3,000 merges)
  tools/fixtures/tokenizers/t5/     spiece.model, tokenizer_config.json, special_tokens_map.json (T5TokenizerFast's
                                    folder without tokenizer.json; trained with python3-sentencepiece's
                                    SentencePieceTrainer: unigram, 4,000 pieces, nmt_nfkc, pad 0, </s> 1, <unk> 2,
                                    no <s>, one user-defined symbol "<sep>")
  tools/fixtures/tokenizers/expected.json.gz
      {"prompts": [...], "categories": [...],
       "clip": {"max_length": 77, "bos_id", "eos_id", "pad_id",
                "raw": [[ids of each prompt without BOS/EOS, untruncated]],
                "truncated": [bool]},
       "t5": {"max_length": 256, "eos_id", "pad_id", "raw": [[sp.encode(prompt)]], "truncated": [bool]}}
      The padded sequence of a prompt is, for CLIP (tools/sd3/clip_bpe.py CLIPTokenizer.__call__):
      [bos] + raw[:max − 2] + [eos] + [pad] * …; for T5 (transformers' T5Tokenizer with truncation):
      raw[:max − 1] + [eos] + [pad] * …; "truncated" is what the references report (raw longer than that).
      The file stores the references' padded output only through these rules, which the script checks for every
      prompt against CLIPTokenizer.__call__.

  /usr/bin/python3 -m tools.text.make_tokenizer_fixtures            # train both, then the expected ids
  /usr/bin/python3 -m tools.text.make_tokenizer_fixtures --keep-vocab   # only recompute the expected ids
"""
import argparse
import gzip
import io
import json
import os

import sentencepiece as spm

from tools.sd3 import clip_bpe
from tools.text import prompt_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tools", "fixtures", "tokenizers")
CLIP_MERGES = 3000
T5_PIECES = 4000
T5_MAX_LENGTH = 256   # SD3's max_sequence_length default
T5_MODEL_MAX_LENGTH = 512
EXTRA_IDS = 100


def train_clip(out_dir, text):
    vocab, merges = clip_bpe.train_bpe(text, num_merges=CLIP_MERGES, min_frequency=2)
    tok = clip_bpe.CLIPTokenizer(vocab, merges, 77, pad_token=clip_bpe.EOS)
    tok.save(out_dir)
    return tok


def train_t5(out_dir, text):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf, model_type="unigram",
                                   vocab_size=T5_PIECES, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=0.9995, normalization_rule_name="nmt_nfkc",
                                   user_defined_symbols=["<sep>"], num_threads=1, minloglevel=2)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "spiece.model"), "wb") as f:
        f.write(buf.getvalue())
    extra = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    config = {"additional_special_tokens": extra, "clean_up_tokenization_spaces": True, "eos_token": "</s>",
              "extra_ids": EXTRA_IDS, "legacy": True, "model_max_length": T5_MODEL_MAX_LENGTH, "pad_token": "<pad>",
              "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer", "unk_token": "<unk>"}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    special = {"additional_special_tokens": extra, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
        f.write("\n")


def expected(prompts, clip_dir, t5_dir):
    tok = clip_bpe.CLIPTokenizer.from_dir(clip_dir)
    n = tok.model_max_length
    clip_raw, clip_cut = [], []
    for p in prompts:
        raw = tok.encode(p)
        ids, cut = tok(p)
        padded = [tok.bos_token_id] + raw[:n - 2] + [tok.eos_token_id]
        padded += [tok.pad_token_id] * (n - len(padded))
        assert ids == padded and cut == (len(raw) > n - 2), p
        clip_raw.append(raw)
        clip_cut.append(cut)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(t5_dir, "spiece.model"))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    t5_raw = [sp.encode(p) for p in prompts]
    return {"clip": {"max_length": n, "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
                     "pad_id": tok.pad_token_id, "raw": clip_raw, "truncated": clip_cut},
            "t5": {"max_length": T5_MAX_LENGTH, "eos_id": sp.eos_id(), "pad_id": sp.pad_id(), "raw": t5_raw,
                   "truncated": [len(r) > T5_MAX_LENGTH - 1 for r in t5_raw]}}


def main(argv=None):
    p = argparse.ArgumentParser(description="tokenizer fixtures")
    p.add_argument("--keep-vocab", action="store_true", help="keep the trained files, recompute the expected ids")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    clip_dir, t5_dir = os.path.join(args.out, "clip"), os.path.join(args.out, "t5")
    if not args.keep_vocab:
        text = prompt_corpus.training_text()
        train_t5(t5_dir, text)
        train_clip(clip_dir, text)
    prompts = prompt_corpus.prompts()
    data = {"prompts": prompts, "categories": prompt_corpus.categories(len(prompts)),
            **expected(prompts, clip_dir, t5_dir)}
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with gzip.GzipFile(os.path.join(args.out, "expected.json.gz"), "wb", mtime=0) as f:
        f.write(raw)
    for name in ("clip", "t5"):
        d = data[name]
        print(f"{name}: {len(prompts)} prompts, {sum(map(len, d['raw']))} tokens, "
              f"{sum(d['truncated'])} truncated at {d['max_length']}")


if __name__ == "__main__":
    main()
