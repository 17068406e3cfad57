"""Reference CLIP tokenizer (byte-level BPE, transformers' CLIPTokenizer), written from the algorithm, and a small
BPE trainer.

Files, as in a diffusers ``tokenizer/`` folder: ``vocab.json`` (token → id), ``merges.txt`` (``#version: 0.2`` then
one merge ``a b`` per line, best first), ``tokenizer_config.json`` (model_max_length, bos/eos/pad/unk tokens) and
``special_tokens_map.json``.

Encoding a prompt:
1. Text cleanup. transformers' CLIPTokenizer uses ftfy when it is installed (``ftfy.fix_text``, html.unescape
   twice, strip, whitespace runs → one space, lower case); ftfy is not available here (nor in Debian), and without
   it transformers falls back to its BasicTokenizer(strip_accents=False, do_split_on_punc=False). This module does
   exactly that fallback: drop NUL, U+FFFD and control characters (Unicode category C*, except tab/newline/CR);
   whitespace (space, tab, newline, CR, category Zs) → space; a space around each CJK ideograph; NFC; split on
   whitespace; lower-case each word (str.lower); join with one space. What that means for unicode: the ftfy path
   would also repair mojibake ("Ã©" → "é"), turn curly quotes into straight ones, fullwidth letters into ASCII,
   ligatures ("ﬁ") into letters and HTML entities ("&amp;") into characters, and would not space out CJK
   ideographs; here those stay as written and are byte-level encoded, so such prompts tokenize differently from
   a machine with ftfy. Plain ASCII prompts (and NFC text without those cases) tokenize identically.
2. Pre-tokenization with CLIP's regex (python3-regex, case-insensitive):
   ``<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``. The two
   special strings in a prompt become the special tokens (as transformers' added-token split does).
3. Each piece's UTF-8 bytes are mapped to printable characters (GPT-2's bytes_to_unicode), ``</w>`` is appended to
   the last character, and the lowest-ranked merge present is applied until none applies.
4. ``<|startoftext|>`` + ids[:max_length − 2] + ``<|endoftext|>``, then the pad token up to max_length
   (SD3's pipeline: padding="max_length", truncation=True, max_length = model_max_length).

  /usr/bin/python3 -m tools.sd3.clip_bpe --dir models/shapes/tokenizer "a red cube left of a blue ball"
"""
import argparse
import collections
import json
import os
import unicodedata

import regex

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PATTERN = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                        regex.IGNORECASE)
MAX_MERGES = 49152 - 256 - 2   # transformers' CLIPTokenizer reads at most this many merges (lines 1…48894)
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode():
    """byte → printable character: the printable Latin-1 bytes ('!'…'~', '¡'…'¬', '®'…'ÿ') map to themselves, the
    other 68 bytes to U+0100, U+0101, … in byte order. The dict's ORDER is GPT-2's and CLIP's: the printable bytes
    first, then the other 68; CLIP's vocabulary lists its 256 byte symbols in this order (so "!" has id 0)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def clean_text(text):
    """Step 1 of the module docstring (transformers' no-ftfy path)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        cat = unicodedata.category(ch)
        if ch in " \t\n\r" or cat == "Zs":
            out.append(" ")
        elif cat.startswith("C"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    words = unicodedata.normalize("NFC", "".join(out)).split()
    return " ".join(w.lower() for w in words)


def pre_tokenize(text):
    """The regex pieces of cleaned text."""
    return PATTERN.findall(text)


def _word_symbols(piece):
    chars = [BYTE_ENCODER[b] for b in piece.encode("utf-8")]
    return chars[:-1] + [chars[-1] + "</w>"]


def _pairs(symbols):
    return {(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)}


def _read_special(value):
    """A special token as tokenizer_config.json / special_tokens_map.json store it: a string or {"content": …}."""
    if value is None or isinstance(value, str):
        return value
    return value["content"]


class CLIPTokenizer:
    def __init__(self, vocab, merges, model_max_length=77, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                 unk_token=EOS):
        self.encoder = dict(vocab)
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.merges = [tuple(m) for m in merges][:MAX_MERGES]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.model_max_length = model_max_length
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            if getattr(self, name) not in self.encoder:
                raise ValueError(f"{name} {getattr(self, name)!r} is not in the vocabulary")
        self.bos_token_id = self.encoder[bos_token]
        self.eos_token_id = self.encoder[eos_token]
        self.pad_token_id = self.encoder[pad_token]
        self.unk_token_id = self.encoder[unk_token]
        self.cache = {BOS: BOS, EOS: EOS}

    # -- files --------------------------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path):
        with open(os.path.join(path, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        with open(os.path.join(path, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().strip().split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line]   # line 0 is the "#version" header
        cfg = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):   # the config wins, as in transformers
            p = os.path.join(path, name)
            if os.path.exists(p):
                with open(p, encoding="utf-8") as f:
                    cfg.update({k: v for k, v in json.load(f).items() if v is not None})
        kw = {k: _read_special(cfg[k]) for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in cfg}
        if "model_max_length" in cfg:
            kw["model_max_length"] = int(cfg["model_max_length"])
        return cls(vocab, merges, **kw)

    def tokenizer_config(self):
        """tokenizer_config.json as transformers writes it for a CLIPTokenizer."""
        decoder = {str(self.encoder[t]): {"content": t, "lstrip": False, "normalized": True, "rstrip": False,
                                          "single_word": False, "special": True}
                   for t in sorted({self.bos_token, self.eos_token, self.pad_token, self.unk_token},
                                   key=lambda t: self.encoder[t]) if t in (BOS, EOS)}
        return {"add_prefix_space": False, "added_tokens_decoder": decoder, "bos_token": self.bos_token,
                "clean_up_tokenization_spaces": True, "do_lower_case": True, "eos_token": self.eos_token,
                "errors": "replace", "model_max_length": self.model_max_length, "pad_token": self.pad_token,
                "tokenizer_class": "CLIPTokenizer", "unk_token": self.unk_token}

    def special_tokens_map(self):
        def entry(t):
            return {"content": t, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
        return {"bos_token": entry(self.bos_token), "eos_token": entry(self.eos_token),
                "pad_token": self.pad_token if self.pad_token not in (BOS, EOS) else entry(self.pad_token),
                "unk_token": entry(self.unk_token)}

    def save(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.encoder, f, ensure_ascii=False)
        with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
            f.write(MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(self.tokenizer_config(), f, indent=2, ensure_ascii=False)
            f.write("\n")
        with open(os.path.join(path, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump(self.special_tokens_map(), f, indent=2, ensure_ascii=False)
            f.write("\n")

    # -- BPE ----------------------------------------------------------------------------------------------------
    def bpe(self, piece):
        """The BPE tokens (strings) of one pre-tokenized piece, already byte-encoded or a special token."""
        if piece in self.cache:
            return self.cache[piece]
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(word) > 1:
            best = min(_pairs(word), key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        if len(self.cache) < 100000:
            self.cache[piece] = out
        return out

    def tokenize(self, text):
        tokens = []
        for piece in pre_tokenize(clean_text(text)):
            if piece in (BOS, EOS):
                tokens.append(piece)
                continue
            encoded = "".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))
            tokens.extend(self.bpe(encoded).split(" "))
        return tokens

    def encode(self, text):
        """Ids of the text without BOS/EOS (unknown tokens → unk)."""
        return [self.encoder.get(t, self.unk_token_id) for t in self.tokenize(text)]

    def __call__(self, text, max_length=None, padding=True, truncation=True):
        """Padded ids for one prompt and whether it was cut: BOS + ids[:max−2] + EOS + pad…, length max_length
        (default model_max_length). Returns (ids, truncated)."""
        n = max_length or self.model_max_length
        ids = self.encode(text)
        truncated = len(ids) > n - 2
        if truncation:
            ids = ids[:n - 2]
        ids = [self.bos_token_id] + ids + [self.eos_token_id]
        if padding:
            ids += [self.pad_token_id] * (n - len(ids))
        return ids, truncated

    def batch(self, texts, max_length=None):
        """A list of padded id lists (the pipeline's tokenizer(…, padding="max_length", truncation=True))."""
        return [self(t, max_length)[0] for t in texts]

    def decode(self, ids, skip_special_tokens=True):
        specials = {self.bos_token_id, self.eos_token_id, self.pad_token_id} if skip_special_tokens else set()
        text = "".join(self.decoder[i] for i in ids if i not in specials)
        # </w> marks a word end (a space); every other character of a valid vocabulary is in the byte table
        parts = text.split("</w>")
        raw = bytearray()
        for k, part in enumerate(parts):
            raw.extend(BYTE_DECODER[c] for c in part)
            if k < len(parts) - 1:
                raw.extend(b" ")
        return raw.decode("utf-8", errors="replace").strip()


# -- training ---------------------------------------------------------------------------------------------------
def train_bpe(corpus, num_merges=1000, min_frequency=2):
    """Learns merges from an iterable of texts, CLIP's way: words are the regex pieces of the cleaned text, each a
    sequence of byte characters whose last carries </w>; repeatedly the most frequent adjacent pair (counted over
    word occurrences; ties → the lexicographically smallest pair, for determinism) becomes a merge, until
    num_merges merges or no pair occurs min_frequency times. Returns (vocab, merges) laid out like CLIP's: the 256
    byte characters in bytes_to_unicode order, the same 256 with </w>, each merge's result, then
    <|startoftext|> and <|endoftext|> (the two highest ids)."""
    counts = collections.Counter()
    for text in corpus:
        for piece in pre_tokenize(clean_text(text)):
            if piece not in (BOS, EOS):
                counts[tuple(_word_symbols(piece))] += 1
    words = {w: c for w, c in counts.items()}
    merges = []
    while len(merges) < num_merges:
        pair_counts = collections.Counter()
        for w, c in words.items():
            for i in range(len(w) - 1):
                pair_counts[(w[i], w[i + 1])] += c
        if not pair_counts:
            break
        best_count = max(pair_counts.values())
        if best_count < min_frequency:
            break
        best = min(p for p, c in pair_counts.items() if c == best_count)
        merges.append(best)
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    base = list(BYTE_ENCODER.values())
    tokens = base + [b + "</w>" for b in base]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def main(argv=None):
    p = argparse.ArgumentParser(description="CLIP BPE tokenizer (reference)")
    p.add_argument("--dir", required=True, help="a tokenizer folder (vocab.json, merges.txt, …)")
    p.add_argument("text", nargs="+")
    args = p.parse_args(argv)
    tok = CLIPTokenizer.from_dir(args.dir)
    for t in args.text:
        ids, cut = tok(t)
        print(json.dumps({"text": t, "tokens": tok.tokenize(t), "ids": ids, "truncated": cut}, ensure_ascii=False))


if __name__ == "__main__":
    main()
