"""A deterministic prompt corpus for tokenizer parity (issue 24 items 2 and 5), and a training text for the
fixture vocabularies.

prompts() returns the same list on every run (a seeded random.Random, no hash-ordered iteration): 1,200 prompts in
categories that each stress one part of a tokenizer — plain English prompts, mixed case, punctuation and
contractions, whitespace runs (tab, newline, NBSP, ideographic space, U+2028, NEL), numbers (decimals, other scripts'
digits, fractions, Roman numerals), accents (precomposed and decomposed, İ, final sigma, ß, U+0345), CJK (Chinese,
Japanese, Korean, fullwidth and halfwidth forms), emoji (skin tones, ZWJ families, flags, variation selectors),
HTML-ish text and the special-token strings (<|endoftext|>, </s>, <pad>, <extra_id_0>), other scripts, control
and format characters, the empty prompt, over-long prompts (up to ~3,000 characters, a 600-character word), and
random code points from the whole of Unicode. Only characters assigned in the Unicode version of the Python that
made the fixtures are drawn at random (unicodedata.unidata_version; Python 3.11: 14.0), never lone surrogates.

training_text() is the text the fixture vocabularies are trained on: prompts of another seed plus pseudo-words, so
that a few thousand merges/pieces are learnt.

  /usr/bin/python3 -m tools.text.prompt_corpus [--count N] [--show K]
"""
import argparse
import json
import random
import unicodedata

SEED = 24_2

ADJECTIVES = ("red green blue yellow purple orange black white golden silver tiny huge ancient futuristic "
              "cozy misty neon rusty wooden glass crystal fluffy shiny dark bright quiet stormy sunny frozen "
              "abandoned colorful minimalist surreal detailed realistic cinematic dramatic soft vintage").split()
NOUNS = ("cat dog fox owl dragon robot castle forest city street river mountain lighthouse ship astronaut "
         "horse garden library kitchen bicycle cube sphere pyramid ball box tree flower portrait landscape "
         "village bridge cathedral desert ocean island train window teapot violin knight wizard mushroom "
         "butterfly whale tiger penguin skyscraper lantern").split()
VERBS = ("riding holding reading painting watching chasing carrying flying over sitting on standing near "
         "walking through floating above hiding under").split()
STYLES = ("oil painting, watercolor, pencil sketch, 35mm photograph, digital art, concept art, studio lighting, "
          "highly detailed, 4k, 8k uhd, trending on artstation, octane render, bokeh, golden hour, "
          "award-winning, matte painting, isometric, low poly, ukiyo-e, art nouveau").split(", ")
CONTRACTIONS = ("it's", "don't", "we'll", "they're", "I've", "I'm", "she'd", "IT'S", "DON'T", "WE'LL",
                "o'clock", "rock 'n' roll", "''s", "'S", "'ſ", "the cat's hat", "'tis", "y'all", "''", "'")
PUNCT = list(",.;:!?-_()[]{}<>/\\|@#$%^&*+=~`\"'") + ["...", "!!!", "?!", "--", "—", "–", "…", "«", "»", "“",
                                                         "”", "‘", "’", "¿", "¡", "§", "¶", "•", "°", "©", "®", "™"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", " \t ", "\u00a0", "\u2003", "\u3000", "\u2028", "\u2029",
          "\u0085", "\u200b", "\u202f", "\u205f", "\u1680", "\x0b", "\x0c", "\n\n\n", "      "]
NUMBERS = ["0", "7", "42", "1024x1024", "3.14159", "1,000,000", "2nd", "21st", "1990s", "-5", "+12", "50%",
           "$9.99", "12:30", "2024-01-31", "1e-6", "0x1F", "٣", "٠١٢", "३४", "๓", "²", "³", "½", "¾", "Ⅻ",
           "ⅳ", "①", "⑩", "１２３", "𝟙𝟚", "۴", "፲", "〇", "٫", "10,5"]
ACCENTED = ["café", "crème brûlée", "naïve", "Ångström", "Straße", "STRASSE", "İstanbul", "ıi", "ΟΔΟΣ",
            "Σίσυφος", "ὈΔΥΣΣΕΎΣ", "façade", "jalapeño", "Zürich", "Ærøskøbing", "Łódź", "Dvořák", "São Paulo",
            "e\u0301", "A\u030a", "n\u0303o", "o\u0308\u0304", "\u1fb3", "\u03b1\u0345", "\u0345", "x\u0345y",
            "ǅ", "ǈ", "Ǳ", "ﬁ", "ﬂ", "ß", "ẞ", "Ĳ", "ŉ", "ǰ", "Ω", "K", "Å", "µ", "ſ"]
CJK = ["一只猫坐在桌子上", "山水画，云雾缭绕", "東京の夜景、ネオン", "ひらがなとカタカナ", "서울의 밤거리", "안녕하세요",
       "ＡＢＣ１２３", "ｶﾀｶﾅ", "漢字", "𠀀𠀁", "中文English混合", "【特别】", "「引用」", "、。・", "㐀㐁", "豈",
       "火鍋🍲", "ㄅㄆㄇ", "𪜀"]
EMOJI = ["🐱", "🐶", "👍", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "🇺🇸", "❤️", "❤", "☕", "🌈✨", "🚀🌕", "😀😃😄",
         "🏳️\u200d🌈", "#️⃣", "©️", "🧑\u200d🚀", "🙏🏿", "🫠", "🤖"]
HTML = ["<b>bold</b>", "<i>italic</i>", "&amp;", "&lt;tag&gt;", "&quot;quoted&quot;", "&#39;", "&#x1F600;",
        "<div class=\"x\">", "</div>", "<br/>", "<img src='a.png'>", "<p>text</p>", "<!-- comment -->",
        "<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "</s>", "<s>", "<pad>", "<unk>", "<sep>",
        "<extra_id_0>", "<extra_id_99>", "[CLS]", "{{template}}", "`code`", "**bold**", "http://example.com/a?b=c&d=e",
        "user@example.com", "#hashtag", "@mention", "C:\\path\\to\\file", "a_b_c", "snake_case_name"]
SCRIPTS = ["Привет, мир", "ЁЖИК", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "გამარჯობა",
           "Բարեւ", "Γειά σου Κόσμε", "ሰላም", "வணக்கம்", "ສະບາຍດີ", "မင်္ဂလာပါ", "∑∫√∞≈≠", "→⇒↔", "┌─┐",
           "♠♣♥♦", "♪♫", "€£¥₹", "𝐀𝐁𝐂", "𝔄𝔅", "Ⓐⓑ", "ᴀʙᴄ", "ʰᵉˡˡᵒ", "ǃ", "ﷺ", "ﬀ", "㍻", "㎏", "℃", "№",
           "Ⅸ", "ⅸ", "ꙮ", "ᚠᚢᚦ", "ⴰⵣⵓⵍ"]
CONTROL = ["\x00", "\x07", "\x1b[0m", "\x7f", "\u00ad", "\u200c", "\u200d", "\u200e", "\u2066", "\ufeff",
           "\ufffd", "\ue000", "\U000f0000", "\u0600", "\x1c", "\x1f"]


def _assigned(cp):
    if 0xD800 <= cp <= 0xDFFF:
        return False
    return unicodedata.category(chr(cp)) != "Cn"


def _random_codepoint(rng):
    """Any assigned code point: half from the BMP, half from the rest (weights favour the scripts in use)."""
    while True:
        r = rng.random()
        if r < 0.5:
            cp = rng.randrange(0x20, 0x3000)
        elif r < 0.75:
            cp = rng.randrange(0x3000, 0x10000)
        else:
            cp = rng.randrange(0x10000, 0x32000)
        if _assigned(cp):
            return chr(cp)


def _plain(rng):
    parts = [f"a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"]
    if rng.random() < 0.7:
        parts.append(f"{rng.choice(VERBS)} a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}")
    text = " ".join(parts)
    for _ in range(rng.randrange(0, 4)):
        text += ", " + rng.choice(STYLES)
    return text


def _mixed_case(rng):
    words = _plain(rng).split(" ")
    out = []
    for w in words:
        r = rng.random()
        out.append(w.upper() if r < 0.3 else w.title() if r < 0.6 else
                   "".join(c.upper() if rng.random() < 0.5 else c for c in w))
    return " ".join(out)


def _sprinkle(rng, pool, k_max=4, join=" "):
    words = _plain(rng).split(" ")
    for _ in range(rng.randrange(1, k_max + 1)):
        i = rng.randrange(len(words) + 1)
        words.insert(i, rng.choice(pool))
    return join.join(words)


def _punct(rng):
    if rng.random() < 0.4:
        return _sprinkle(rng, CONTRACTIONS)
    words = _plain(rng).split(" ")
    out = []
    for w in words:
        out.append(w)
        if rng.random() < 0.4:
            p = rng.choice(PUNCT)
            out.append(p if rng.random() < 0.5 else p * rng.randrange(2, 5))
    return (" " if rng.random() < 0.5 else "").join(out)


def _whitespace(rng):
    words = _plain(rng).split(" ")
    text = rng.choice(SPACES) if rng.random() < 0.5 else ""
    for w in words:
        text += w + rng.choice(SPACES)
    if rng.random() < 0.5:
        text = text.rstrip()
    return text


def _numbers(rng):
    return _sprinkle(rng, NUMBERS, 5, rng.choice([" ", " ", ""]))


def _accents(rng):
    return _sprinkle(rng, ACCENTED, 5)


def _cjk(rng):
    if rng.random() < 0.4:
        return "".join(rng.choice(CJK) for _ in range(rng.randrange(1, 5)))
    return _sprinkle(rng, CJK, 3, rng.choice([" ", ""]))


def _emoji(rng):
    return _sprinkle(rng, EMOJI, 4, rng.choice([" ", " ", ""]))


def _html(rng):
    return _sprinkle(rng, HTML, 4, rng.choice([" ", ""]))


def _scripts(rng):
    return _sprinkle(rng, SCRIPTS, 3)


def _control(rng):
    return _sprinkle(rng, CONTROL + SPACES, 4, rng.choice([" ", ""]))


def _long(rng):
    r = rng.random()
    if r < 0.15:
        return rng.choice("abcxyz") * rng.randrange(100, 600)
    if r < 0.25:
        return " ".join(rng.choice(["a", "the", "red", "!"]) for _ in range(rng.randrange(70, 300)))
    if r < 0.35:
        return "".join(str(rng.randrange(10)) for _ in range(rng.randrange(60, 400)))
    parts = []
    target = rng.randrange(300, 3000)
    gens = (_plain, _plain, _plain, _punct, _accents, _cjk, _emoji, _numbers)
    while sum(len(p) for p in parts) < target:
        parts.append(rng.choice(gens)(rng))
    return rng.choice([", ", ". ", " ", "\n"]).join(parts)


def _fuzz(rng):
    n = rng.randrange(1, 40)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            out.append(_random_codepoint(rng))
        elif r < 0.7:
            out.append(" ")
        elif r < 0.85:
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789'"))
        else:
            out.append(rng.choice(PUNCT + ACCENTED + EMOJI + CONTROL))
    return "".join(out)


def _mix(rng):
    pools = (NUMBERS, ACCENTED, CJK, EMOJI, HTML, SCRIPTS, CONTROL, SPACES, PUNCT, CONTRACTIONS)
    return _sprinkle(rng, [x for p in pools for x in p], 8, rng.choice([" ", "", " "]))


CATEGORIES = (("plain", _plain), ("mixed_case", _mixed_case), ("punctuation", _punct), ("whitespace", _whitespace),
              ("numbers", _numbers), ("accents", _accents), ("cjk", _cjk), ("emoji", _emoji), ("html", _html),
              ("scripts", _scripts), ("control", _control), ("long", _long), ("fuzz", _fuzz), ("mix", _mix))

FIXED = ["", " ", "\t\n", "a", "A", "<|endoftext|>", "</s>", "a photo of a cat", "A PHOTO OF A CAT",
         "a red cube to the left of a blue sphere", "!", "!!", "'s", "it's", "x" * 1000, "🐱" * 100,
         "猫" * 100, "a " * 200, "\u3000\u3000", "\u0345", "ᾳ", "İ", "ΣΑΣ ΣΑΣ.", "ﬁﬂ"]


def prompts(count=1200, seed=SEED):
    """The corpus: the fixed prompts, then count − len(FIXED) generated ones cycling through the categories."""
    rng = random.Random(seed)
    out = list(FIXED)
    k = 0
    while len(out) < count:
        _, gen = CATEGORIES[k % len(CATEGORIES)]
        out.append(gen(rng))
        k += 1
    return out


def categories(count=1200):
    """The category name of each prompt of prompts(count)."""
    names = ["fixed"] * len(FIXED)
    k = 0
    while len(names) < count:
        names.append(CATEGORIES[k % len(CATEGORIES)][0])
        k += 1
    return names


def _pseudo_word(rng):
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch",
              "cr", "dr", "fl", "gr", "pl", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "st", "ck", "ght"]
    return "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randrange(1, 4)))


def training_text(lines=6000, seed=SEED + 1):
    """The training text of the fixture vocabularies: prompts of another seed, and lines of pseudo-words drawn
    with Zipf-like frequencies (so frequent ones become whole tokens and rare ones stay split)."""
    rng = random.Random(seed)
    lexicon = [_pseudo_word(rng) for _ in range(3000)]
    weights = [1.0 / (i + 1) for i in range(len(lexicon))]
    out = prompts(lines // 2, seed)
    while len(out) < lines:
        out.append(" ".join(rng.choices(lexicon, weights)[0] for _ in range(rng.randrange(3, 15))))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1200)
    p.add_argument("--show", type=int, default=20, help="print this many prompts (JSON strings)")
    args = p.parse_args(argv)
    ps = prompts(args.count)
    cats = categories(args.count)
    for i in range(0, len(ps), max(1, len(ps) // args.show)):
        print(cats[i], json.dumps(ps[i], ensure_ascii=False)[:160])
    print(f"{len(ps)} prompts, {sum(len(p) for p in ps)} characters, longest {max(len(p) for p in ps)}")


if __name__ == "__main__":
    main()
