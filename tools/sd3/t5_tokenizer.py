"""Reference T5 tokenizer for SD3's tokenizer_3: Debian's python3-sentencepiece on the folder's ``spiece.model``.

SD3's pipeline calls tokenizer_3(prompt, padding="max_length", max_length=max_sequence_length, truncation=True,
add_special_tokens=True): the SentencePiece ids cut to max_length − 1, then ``</s>``, then ``<pad>`` up to
max_length; no BOS (docs/TEXT_MODELS.md, "Tokenizers", T5). The eos and pad pieces are the folder's
(special_tokens_map.json, tokenizer_config.json over it), looked up in the SentencePiece model. As in
python3-sentencepiece (and the Java T5Tokenizer), transformers' added tokens written in the prompt are plain text.
"""
import json
import os
import shutil

import sentencepiece as spm

FILES = ("spiece.model", "special_tokens_map.json", "tokenizer_config.json")


def _special(folder, key, default):
    value = default
    for name in ("special_tokens_map.json", "tokenizer_config.json"):   # the config wins, as transformers merges
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                v = json.load(f).get(key)
            if isinstance(v, dict):
                v = v.get("content")
            if v is not None:
                value = v
    return value


class T5Tokenizer:
    def __init__(self, folder):
        self.folder = folder
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
        self.eos_token_id = self.sp.piece_to_id(_special(folder, "eos_token", "</s>"))
        self.pad_token_id = self.sp.piece_to_id(_special(folder, "pad_token", "<pad>"))

    @classmethod
    def from_dir(cls, folder):
        return cls(folder)

    def __call__(self, text, max_length):
        """(exactly max_length ids, whether the prompt was cut)."""
        raw = self.sp.encode(text)
        ids = raw[:max_length - 1] + [self.eos_token_id]
        return ids + [self.pad_token_id] * (max_length - len(ids)), len(raw) > max_length - 1

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        for name in FILES:
            src = os.path.join(self.folder, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(folder, name))
