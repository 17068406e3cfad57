"""Prompt scenes: renderer, prompt grammar and judge of the bundled text-to-image data set (issue 25; the rules are
restated in docs/SCENE_GRAMMAR.md).

A scene is one or two flat-coloured shapes on a black L×L canvas; a prompt names them and where they are; the judge
reads an image back and says whether it satisfies a prompt. numpy and the standard library only (PIL for --grid).

Conventions (all exact, integer arithmetic where it matters):
- Pixel (row y, column x) covers the unit square [x, x+1) × [y, y+1); y grows downwards, so "top" is small y.
- Objects are a×a boxes, a = round(0.34·L) (11 at L = 32). Obj.cx, Obj.cy is the CENTRE pixel: the box covers
  columns x0 … x0+a−1 with x0 = cx − a//2 (for odd a, as at L = 32, exactly cx ± a//2), rows likewise.
- A box's (and a bounding box's) centre is (xmin + xmax + 1)/2 in those coordinates; its third on an axis is
  ⌊3·centre / L⌋ (0, 1, 2), so the middle third is [L/3, 2L/3).
- Shapes are rasterised at pixel centres, offsets u = x + ½ − a/2, v = y + ½ − a/2 from the box centre (x, y the
  pixel's column and row inside the box): square every pixel; circle u² + v² ≤ (a/2)²; triangle (apex up, base the
  bottom row) |u| ≤ (y + 1)/2, the triangle's half-width at the row's lower edge, so the apex row holds the middle
  pixel and the bottom row is full for any a.

  /usr/bin/python3 -m tools.shapes.scenes --grid /tmp/scenes.png      # a grid of sample scenes with their prompts
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

L = 32
PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (235, 235, 235),
}
COLOURS = tuple(PALETTE)
SHAPES = ("square", "circle", "triangle")
SHAPE_WORDS = {
    "square": ("square", "cube", "box"),
    "circle": ("circle", "sphere", "ball"),
    "triangle": ("triangle", "pyramid"),
}
RELATIONS = ("left of", "right of", "above", "below")
RELATION_WORDS = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
SIDES = ("left", "right", "top", "bottom")
KINDS = ("centre", "side", "relation")
MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Judge thresholds of the spec.
COLOUR_RADIUS = 90            # RGB distance to a palette colour, strictly below
MIN_AREA_FRACTION = 0.25      # an object's component has area ≥ a²/4
TRIANGLE_RATIO = 0.6          # top-quarter mean row width < 0.6 × the bottom quarter's
SQUARE_FILL = 0.88            # area ≥ 0.88 × bounding box


def object_size(size: int = L) -> int:
    """a = round(0.34·L), halves rounded up (11 at L = 32)."""
    return int(np.floor(0.34 * size + 0.5))


SIZE = object_size(L)  # 11


@dataclass(frozen=True)
class Obj:
    """One object: colour and shape names, and (cx, cy) the box's centre pixel (box from cx − a//2, cy − a//2)."""
    colour: str
    shape: str
    cx: int
    cy: int


@dataclass(frozen=True)
class Spec:
    """The meaning of a prompt. kind "centre": one object in the middle; "side": one object on `side`; "relation":
    objects[0] (A) stands in `relation` to objects[1] (B). objects is a tuple of (colour, shape) pairs."""
    kind: str
    objects: tuple
    side: str | None = None
    relation: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}, known: {', '.join(KINDS)}")
        n = 2 if self.kind == "relation" else 1
        if len(self.objects) != n:
            raise ValueError(f"a {self.kind} spec has {n} object(s), got {len(self.objects)}")
        for colour, shape in self.objects:
            if colour not in PALETTE:
                raise ValueError(f"unknown colour {colour!r}, known: {', '.join(COLOURS)}")
            if shape not in SHAPES:
                raise ValueError(f"unknown shape {shape!r}, known: {', '.join(SHAPES)}")
        if (self.side is not None) != (self.kind == "side") or (self.side is not None and self.side not in SIDES):
            raise ValueError(f"side {self.side!r} does not fit kind {self.kind!r} (sides: {', '.join(SIDES)})")
        if ((self.relation is not None) != (self.kind == "relation")
                or (self.relation is not None and self.relation not in RELATIONS)):
            raise ValueError(f"relation {self.relation!r} does not fit kind {self.kind!r}")
        if n == 2 and self.objects[0][0] == self.objects[1][0]:
            raise ValueError(f"the two objects must have different colours, both are {self.objects[0][0]}")

    @classmethod
    def centre(cls, colour, shape):
        return cls("centre", ((colour, shape),))

    @classmethod
    def on_side(cls, colour, shape, side):
        return cls("side", ((colour, shape),), side=side)

    @classmethod
    def relate(cls, colour_a, shape_a, relation, colour_b, shape_b):
        return cls("relation", ((colour_a, shape_a), (colour_b, shape_b)), relation=relation)

    @property
    def combo(self):
        """(colour A, shape A, relation, colour B, shape B) of a two-object spec, else None."""
        if self.kind != "relation":
            return None
        (ca, sa), (cb, sb) = self.objects
        return (ca, sa, self.relation, cb, sb)


# ---------------------------------------------------------------------------------------------------------------
# Held-out combinations

def _all_combos():
    """The 720 two-object combinations, in a fixed order."""
    return [(ca, sa, r, cb, sb) for ca, sa, r, cb, sb in itertools.product(COLOURS, SHAPES, RELATIONS, COLOURS, SHAPES)
            if ca != cb]


def _mirror(combo):
    ca, sa, r, cb, sb = combo
    return (cb, sb, MIRROR[r], ca, sa)


def _held_out():
    """The 36 mirror pairs whose representative (relation "left of" or "above") has the smallest SHA-256 of its
    canonical prompt, both members of each pair: 72 of 720. Mirrors are held out together because "A left of B" and
    "B right of A" describe the same pictures, so holding out one alone would leak its images into training."""
    reps = [c for c in _all_combos() if c[2] in ("left of", "above")]
    key = lambda c: hashlib.sha256(prompt_text(Spec.relate(*c)).encode("utf-8")).hexdigest()  # noqa: E731
    chosen = sorted(reps, key=key)[:len(reps) // 10]
    return frozenset(chosen) | frozenset(_mirror(c) for c in chosen)


def is_held_out(spec: Spec) -> bool:
    return spec.combo is not None and spec.combo in HELD_OUT


# ---------------------------------------------------------------------------------------------------------------
# Prompts

def _choice(rng, options):
    """A uniform pick from a sequence with a numpy Generator or a random.Random."""
    if hasattr(rng, "integers"):
        return options[int(rng.integers(len(options)))]
    return options[rng.randrange(len(options))]


def prompt_text(spec: Spec, rng=None) -> str:
    """The lower-case prompt of a spec; with rng every shape and relation word is drawn uniformly among its
    synonyms (the canonical word included), without rng the canonical words are used."""
    def shape_word(shape):
        return _choice(rng, SHAPE_WORDS[shape]) if rng is not None else shape

    (ca, sa) = spec.objects[0]
    first = f"a {ca} {shape_word(sa)}"
    if spec.kind == "centre":
        return first
    if spec.kind == "side":
        return f"{first} on the {spec.side}"
    cb, sb = spec.objects[1]
    rel = _choice(rng, RELATION_WORDS[spec.relation]) if rng is not None else spec.relation
    return f"{first} {rel} a {cb} {shape_word(sb)}"


_SHAPE_OF_WORD = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
_RELATION_OF_WORDS = {tuple(w.split()): r for r, ws in RELATION_WORDS.items() for w in ws}


def parse_prompt(text: str) -> Spec:
    """The spec of a prompt of the grammar (any synonym). Words may be separated by any run of whitespace; anything
    else (upper case, unknown words, missing or extra words, two objects of one colour) raises ValueError saying
    what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"a prompt is a string, got {type(text).__name__}")
    if text != text.lower():
        raise ValueError(f"prompts are lower case: {text!r}")
    words = text.split()
    pos = 0

    def fail(msg):
        raise ValueError(f"{msg} in prompt {text!r}")

    def take_object():
        nonlocal pos
        if pos >= len(words):
            fail(f"expected 'a' at word {pos + 1}, the prompt ended")
        if words[pos] != "a":
            fail(f"expected 'a' at word {pos + 1}, got {words[pos]!r}")
        if pos + 1 >= len(words):
            fail("expected a colour after 'a', the prompt ended")
        colour = words[pos + 1]
        if colour not in PALETTE:
            fail(f"unknown colour {colour!r} (known: {', '.join(COLOURS)})")
        if pos + 2 >= len(words):
            fail(f"expected a shape after {colour!r}, the prompt ended")
        word = words[pos + 2]
        if word not in _SHAPE_OF_WORD:
            fail(f"unknown shape word {word!r} (known: {', '.join(_SHAPE_OF_WORD)})")
        pos += 3
        return colour, _SHAPE_OF_WORD[word]

    if not words:
        raise ValueError("empty prompt")
    first = take_object()
    if pos == len(words):
        return Spec.centre(*first)
    if words[pos] == "on":
        rest = words[pos:]
        if len(rest) != 3 or rest[1] != "the" or rest[2] not in SIDES:
            fail(f"expected 'on the {{{'|'.join(SIDES)}}}' at the end, got {' '.join(rest)!r}")
        return Spec.on_side(*first, rest[2])
    for n in (4, 2, 1):  # longest relation phrase first ("to the left of")
        phrase = tuple(words[pos:pos + n])
        if phrase in _RELATION_OF_WORDS:
            relation = _RELATION_OF_WORDS[phrase]
            pos += n
            break
    else:
        known = ", ".join(w for ws in RELATION_WORDS.values() for w in ws)
        fail(f"expected 'on the …' or a relation ({known}) after {' '.join(words[:pos])!r}, got {words[pos]!r}")
    second = take_object()
    if pos != len(words):
        fail(f"unexpected words after the second object: {' '.join(words[pos:])!r}")
    if first[0] == second[0]:
        fail(f"the two objects must have different colours, both are {first[0]}")
    return Spec.relate(first[0], first[1], relation, second[0], second[1])


HELD_OUT = _held_out()


# ---------------------------------------------------------------------------------------------------------------
# Sampling

def _combos_of(relation, held_out):
    """The combinations with this relation that a sampler with this held_out setting may return."""
    return [c for c in _all_combos() if c[2] == relation and (held_out is None or (c in HELD_OUT) == held_out)]


_COMBOS_CACHE = {}


def _spec_of(rng, kind, where, held_out):
    if kind == "relation":
        key = (where, held_out)
        if key not in _COMBOS_CACHE:
            _COMBOS_CACHE[key] = _combos_of(where, held_out)
        return Spec.relate(*_choice(rng, _COMBOS_CACHE[key]))
    colour, shape = _choice(rng, COLOURS), _choice(rng, SHAPES)
    return Spec.centre(colour, shape) if kind == "centre" else Spec.on_side(colour, shape, where)


def sample_spec(rng, held_out: bool | None = False) -> Spec:
    """A random prompt meaning. The form is uniform over the three (centred, on a side, two objects); then the side
    is uniform over the four sides, or the relation uniform over the four relations and the combination uniform
    among the allowed ones with that relation, so sides and relations come in equal shares whatever held_out is.
    held_out False never returns a held-out combination, True returns only held-out ones (all two-object, since
    only two-object combinations are held out), None anything."""
    if held_out is True:
        return _spec_of(rng, "relation", _choice(rng, RELATIONS), True)
    kind = _choice(rng, KINDS)
    where = None if kind == "centre" else _choice(rng, SIDES if kind == "side" else RELATIONS)
    return _spec_of(rng, kind, where, held_out)


def _centre_range(size):
    """The centre pixels c for which the box lies wholly inside the canvas."""
    a = object_size(size)
    return range(a // 2, size - a + a // 2 + 1)


def _third(c2, size):
    """Third (0, 1, 2) of a centre given as twice its coordinate (an integer)."""
    return min(2, (3 * c2) // (2 * size))


def _box_centre2(c, size):
    """Twice the continuous centre of the box whose centre pixel is c: 2·x0 + a."""
    a = object_size(size)
    return 2 * (c - a // 2) + a


def _positions_in_third(third, size):
    return [c for c in _centre_range(size) if _third(_box_centre2(c, size), size) == third]


def _axis_pairs(size, ordered):
    """Pairs (p, q) of centre pixels on one axis: ordered → q ≥ p + a + 2 (p before q by a + 2 or more);
    else |p − q| ≤ 0.25·L."""
    a = object_size(size)
    r = _centre_range(size)
    if ordered:
        return [(p, q) for p in r for q in r if q - p >= a + 2]
    return [(p, q) for p in r for q in r if 4 * abs(p - q) <= size]


_SIDE_THIRDS = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2)}  # (x third, y third)


def sample_scene(rng, spec: Spec, L: int = L) -> list:
    """Objects for a spec (A first), uniform among the placements that satisfy its rules. The rules factor over
    the two axes, so each axis is drawn uniformly from its own list of allowed values or pairs, which is exactly
    uniform over the allowed placements."""
    size = L
    if spec.kind in ("centre", "side"):
        tx, ty = (1, 1) if spec.kind == "centre" else _SIDE_THIRDS[spec.side]
        (colour, shape), = spec.objects
        return [Obj(colour, shape, _choice(rng, _positions_in_third(tx, size)),
                    _choice(rng, _positions_in_third(ty, size)))]
    ordered = _axis_pairs(size, True)
    loose = _axis_pairs(size, False)
    p, q = _choice(rng, ordered)           # p is before q along the named axis
    u, v = _choice(rng, loose)             # other axis
    rel = spec.relation
    a_main, b_main = (p, q) if rel in ("left of", "above") else (q, p)
    (ca, sa), (cb, sb) = spec.objects
    if rel in ("left of", "right of"):
        return [Obj(ca, sa, a_main, u), Obj(cb, sb, b_main, v)]
    return [Obj(ca, sa, u, a_main), Obj(cb, sb, v, b_main)]


def box(obj: Obj, L: int = L):
    """(x0, y0, x1, y1), inclusive pixel bounds of an object's a×a box."""
    a = object_size(L)
    x0, y0 = obj.cx - a // 2, obj.cy - a // 2
    return x0, y0, x0 + a - 1, y0 + a - 1


def check_scene(spec: Spec, objs, L: int = L):
    """(ok, why): whether a placement obeys the generation rules of its spec (stricter than the judge)."""
    size = L
    a = object_size(size)
    if [(o.colour, o.shape) for o in objs] != list(spec.objects):
        return False, f"objects {[(o.colour, o.shape) for o in objs]} are not those of the spec {spec.objects}"
    for o in objs:
        x0, y0, x1, y1 = box(o, size)
        if min(x0, y0) < 0 or max(x1, y1) > size - 1:
            return False, f"{o} is not wholly inside the canvas"
    if spec.kind in ("centre", "side"):
        o = objs[0]
        tx, ty = (1, 1) if spec.kind == "centre" else _SIDE_THIRDS[spec.side]
        got = (_third(_box_centre2(o.cx, size), size), _third(_box_centre2(o.cy, size), size))
        return (True, "ok") if got == (tx, ty) else (False, f"{o} is in thirds {got}, wanted {(tx, ty)}")
    oa, ob = objs
    ax0, ay0, ax1, ay1 = box(oa, size)
    bx0, by0, bx1, by1 = box(ob, size)
    gap = max(bx0 - ax1 - 1, ax0 - bx1 - 1, by0 - ay1 - 1, ay0 - by1 - 1)
    if gap < 1:
        return False, f"boxes of {oa} and {ob} are not 1 px apart"
    horizontal = spec.relation in ("left of", "right of")
    main = (ob.cx - oa.cx) if horizontal else (ob.cy - oa.cy)   # B minus A along the named axis
    other = (ob.cy - oa.cy) if horizontal else (ob.cx - oa.cx)
    if spec.relation in ("right of", "below"):
        main = -main
    if main < a + 2:
        return False, f"A is {main} px before B along the axis of {spec.relation!r}, needs ≥ {a + 2}"
    if 4 * abs(other) > size:
        return False, f"centres differ by {abs(other)} px across the axis of {spec.relation!r}, max 0.25·L"
    return True, "ok"


# ---------------------------------------------------------------------------------------------------------------
# Rendering

def shape_mask(shape: str, a: int) -> np.ndarray:
    """bool (a, a): the pixels of a shape in its box, by the pixel-centre rules of the module docstring."""
    y, x = np.mgrid[0:a, 0:a]
    u2, v2 = 2 * x + 1 - a, 2 * y + 1 - a       # twice the offsets of the pixel centre from the box centre
    if shape == "square":
        return np.ones((a, a), bool)
    if shape == "circle":
        return u2 * u2 + v2 * v2 <= a * a
    if shape == "triangle":
        return np.abs(u2) <= y + 1
    raise ValueError(f"unknown shape {shape!r}, known: {', '.join(SHAPES)}")


def render(objs, L: int = L) -> np.ndarray:
    """uint8 (L, L, 3): black canvas, each object's shape filled with its exact palette colour, no anti-aliasing.
    Objects are drawn in order (they never overlap in a valid scene). Raises ValueError on an object outside."""
    size = L
    a = object_size(size)
    img = np.zeros((size, size, 3), np.uint8)
    for o in objs:
        x0, y0, x1, y1 = box(o, size)
        if min(x0, y0) < 0 or max(x1, y1) > size - 1:
            raise ValueError(f"{o} is not wholly inside the {size}×{size} canvas")
        if o.colour not in PALETTE:
            raise ValueError(f"unknown colour {o.colour!r}")
        region = img[y0:y1 + 1, x0:x1 + 1]
        region[shape_mask(o.shape, a)] = PALETTE[o.colour]
    return img


# ---------------------------------------------------------------------------------------------------------------
# Judging

@dataclass(frozen=True)
class Found:
    """An object the judge read: shape, inclusive bounding box, area, and twice the bbox centre (integers)."""
    colour: str
    shape: str
    bbox: tuple   # (x0, y0, x1, y1)
    area: int
    cx2: int
    cy2: int


def classify_pixels(image: np.ndarray) -> np.ndarray:
    """int (L, L): index into COLOURS of each pixel's colour class, −1 for none. A pixel is of colour k when its RGB
    distance to k is below 90 and strictly smaller than to every other palette colour and to black."""
    px = image.astype(np.float64)
    refs = np.array([PALETTE[c] for c in COLOURS] + [(0, 0, 0)], np.float64)
    d = np.sqrt(((px[:, :, None, :] - refs[None, None]) ** 2).sum(-1))    # (L, L, 6)
    out = np.full(image.shape[:2], -1, np.int64)
    for k in range(len(COLOURS)):
        others = np.delete(d, k, axis=2).min(axis=2)
        out[(d[:, :, k] < COLOUR_RADIUS) & (d[:, :, k] < others)] = k
    return out


def largest_component(mask: np.ndarray):
    """(ys, xs) of the largest 4-connected component of a bool mask (BFS); ties go to the component whose first
    pixel comes first in raster order; empty arrays for an empty mask."""
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    best = ([], [])
    for y0, x0 in np.argwhere(mask):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        ys, xs = [], []
        queue = deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(ys) > len(best[0]):
            best = (ys, xs)
    return np.array(best[0], np.int64), np.array(best[1], np.int64)


def read_shape(ys: np.ndarray, xs: np.ndarray) -> str:
    """Shape of a component from its bounding box: triangle when the mean row width (pixels of the component in the
    row) of the top quarter of the box's rows is under 0.6 of the bottom quarter's, else square when the component
    fills ≥ 0.88 of the box, else circle. A quarter is round(h/4) rows (halves up), at least one."""
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = y1 - y0 + 1, x1 - x0 + 1
    widths = np.bincount(ys - y0, minlength=h)
    q = max(1, (h + 2) // 4)
    if widths[:q].mean() < TRIANGLE_RATIO * widths[h - q:].mean():
        return "triangle"
    if len(ys) >= SQUARE_FILL * h * w:
        return "square"
    return "circle"


def detect(image: np.ndarray) -> dict:
    """colour → Found, for each palette colour whose largest 4-connected component has area ≥ a²/4."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected an (L, L, 3) image, got shape {image.shape}")
    size = image.shape[0]
    a = object_size(size)
    classes = classify_pixels(image)
    found = {}
    for k, colour in enumerate(COLOURS):
        mask = classes == k
        if not mask.any():
            continue
        ys, xs = largest_component(mask)
        if len(ys) < MIN_AREA_FRACTION * a * a:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        found[colour] = Found(colour, read_shape(ys, xs), (x0, y0, x1, y1), len(ys), x0 + x1 + 1, y0 + y1 + 1)
    return found


def judge(image: np.ndarray, prompt) -> tuple:
    """(ok, why): whether an image satisfies a prompt (text or Spec) by the rules of the spec. An unparseable
    prompt raises ValueError (it is the caller's error, not the image's)."""
    spec = prompt if isinstance(prompt, Spec) else parse_prompt(prompt)
    size = np.asarray(image).shape[0]
    found = detect(image)
    named = [c for c, _ in spec.objects]
    for colour, shape in spec.objects:
        if colour not in found:
            return False, f"no {colour} object"
        if found[colour].shape != shape:
            return False, f"the {colour} object is a {found[colour].shape}, not a {shape}"
    extra = [c for c in found if c not in named]
    if extra:
        return False, f"extra object(s): {', '.join(f'{found[c].colour} {found[c].shape}' for c in extra)}"
    if spec.kind in ("centre", "side"):
        f = found[named[0]]
        want = (1, 1) if spec.kind == "centre" else _SIDE_THIRDS[spec.side]
        got = (_third(f.cx2, size), _third(f.cy2, size))
        if got != want:
            names = ({0: "left", 1: "middle", 2: "right"}, {0: "top", 1: "middle", 2: "bottom"})
            return False, (f"the {f.colour} {f.shape} is in the {names[0][got[0]]}/{names[1][got[1]]} thirds, "
                           f"wanted {names[0][want[0]]}/{names[1][want[1]]}")
        return True, "ok"
    fa, fb = found[named[0]], found[named[1]]
    horizontal = spec.relation in ("left of", "right of")
    d2 = (fb.cx2 - fa.cx2) if horizontal else (fb.cy2 - fa.cy2)   # twice (B − A) along the named axis
    if spec.relation in ("right of", "below"):
        d2 = -d2
    if 10 * d2 < 3 * size:   # d2/2 ≥ 0.15·L
        return False, (f"the {fa.colour} {fa.shape} is not {spec.relation} the {fb.colour} {fb.shape}: "
                       f"{d2 / 2:g} px on that side, needs ≥ {0.15 * size:g}")
    return True, "ok"


# ---------------------------------------------------------------------------------------------------------------
# Evaluation set and CLI

def eval_set(n: int, seed: int, held_out: bool | None = False) -> list:
    """n prompts, deterministic for (n, seed) (numpy's PCG64 stream; tests pin the first few). Forms come in equal
    shares (counts differ by at most one), and within them sides and relations too; colours, shapes and synonyms
    are drawn at random; the order is shuffled. held_out as in sample_spec (True: two-object prompts only)."""
    rng = np.random.default_rng(seed)
    kinds = ["relation"] * n if held_out is True else [KINDS[i % 3] for i in range(n)]
    count = {k: 0 for k in KINDS}
    prompts = []
    for kind in kinds:
        j = count[kind]
        count[kind] += 1
        where = None if kind == "centre" else (SIDES if kind == "side" else RELATIONS)[j % 4]
        prompts.append(prompt_text(_spec_of(rng, kind, where, held_out), rng))
    order = rng.permutation(n)
    return [prompts[i] for i in order]


def grid_image(n=16, seed=0, scale=4, cols=4):
    """A PIL image: n sample scenes (upscaled by `scale`, nearest) with their prompts and the judge's verdict."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    tile, text_h = L * scale, 36
    w = max(tile, 200)
    rows = (n + cols - 1) // cols
    canvas = Image.new("RGB", (cols * w, rows * (tile + text_h)), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        spec = sample_spec(rng, held_out=None)
        text = prompt_text(spec, rng)
        img = render(sample_scene(rng, spec))
        ok, _ = judge(img, text)
        x, y = (i % cols) * w, (i // cols) * (tile + text_h)
        canvas.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST), (x, y))
        words = text.split()
        half = (len(words) + 1) // 2 if len(text) > 30 else len(words)
        lines = [" ".join(words[:half]), " ".join(words[half:])]
        mark = ("held out, " if is_held_out(spec) else "") + ("judge ok" if ok else "JUDGE FAIL")
        draw.text((x + 2, y + tile + 2), lines[0], fill=(255, 255, 255))
        draw.text((x + 2, y + tile + 13), lines[1] or mark, fill=(255, 255, 255) if lines[1] else (150, 150, 150))
        if lines[1]:
            draw.text((x + 2, y + tile + 24), mark, fill=(150, 150, 150))
    return canvas


def main(argv=None):
    p = argparse.ArgumentParser(description="Prompt scenes (docs/SCENE_GRAMMAR.md)")
    p.add_argument("--grid", metavar="OUT.png", help="write a grid of sample scenes with their prompts")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", action="store_true", help="list the held-out combinations")
    args = p.parse_args(argv)
    if args.held_out:
        for c in sorted(HELD_OUT, key=lambda c: (COLOURS.index(c[0]), SHAPES.index(c[1]), RELATIONS.index(c[2]),
                                                 COLOURS.index(c[3]), SHAPES.index(c[4]))):
            print(prompt_text(Spec.relate(*c)))
    if args.grid:
        grid_image(args.n, args.seed).save(args.grid)
        print(f"wrote {args.grid}")
    if not (args.grid or args.held_out):
        p.print_help()


if __name__ == "__main__":
    main()
