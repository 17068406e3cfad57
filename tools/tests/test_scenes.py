"""tools/shapes/scenes.py: the prompt-scene renderer, grammar and judge (docs/SCENE_GRAMMAR.md).

  /usr/bin/python3 -m unittest tools/tests/test_scenes.py -v

Perturbations the judge must REJECT (every one on each sampled scene where it applies):
  wrong colour    one object recoloured to a palette colour the scene does not use;
  wrong shape     one object drawn as each of the two other shapes;
  swapped         two objects: A and B exchange positions; one object: judged against every other position
                  (centre and the three other sides, or the four sides for a centred one); two objects: judged
                  against the opposite relation too;
  extra object    a third object (a²-box, any shape) of an unused palette colour at a free place, boxes ≥ 1 px apart;
                  also a 6×6 block (36 px ≥ a²/4 = 30.25) of an unused colour;
  missing object  each object left out in turn (an empty canvas for one-object prompts).
Perturbations that must still PASS:
  Gaussian pixel noise, σ = 10 per channel, rounded and clipped to 0…255;
  a 1-px shift of one object in each of the four directions, whenever the shifted placement still obeys the
  generation rules (check_scene);
  a 5×5 block (25 px < a²/4) of an unused palette colour at a free place (too small to be an object).
"""
import collections
import itertools
import os
import re
import sys
import tempfile
import unittest

import numpy as np

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
from shapes import scenes as sc  # noqa: E402
from shapes.scenes import Obj, Spec  # noqa: E402

DOC = os.path.join(os.path.dirname(TOOLS), "docs", "SCENE_GRAMMAR.md")


def sample(rng, n, held_out=None):
    out = []
    for _ in range(n):
        spec = sc.sample_spec(rng, held_out=held_out)
        out.append((spec, sc.sample_scene(rng, spec)))
    return out


def all_specs():
    for c, s in itertools.product(sc.COLOURS, sc.SHAPES):
        yield Spec.centre(c, s)
        for side in sc.SIDES:
            yield Spec.on_side(c, s, side)
    for combo in sc._all_combos():
        yield Spec.relate(*combo)


def all_texts(spec):
    """Every prompt of a spec, over all synonyms, built here from the grammar (not by prompt_text)."""
    (ca, sa) = spec.objects[0]
    for wa in sc.SHAPE_WORDS[sa]:
        if spec.kind == "centre":
            yield f"a {ca} {wa}"
        elif spec.kind == "side":
            yield f"a {ca} {wa} on the {spec.side}"
        else:
            cb, sb = spec.objects[1]
            for rel in sc.RELATION_WORDS[spec.relation]:
                for wb in sc.SHAPE_WORDS[sb]:
                    yield f"a {ca} {wa} {rel} a {cb} {wb}"


def free_place(rng, objs, size=sc.SIZE):
    """A top-left corner for a size×size block at least 1 px from every object's box, or None."""
    boxes = [sc.box(o) for o in objs]
    corners = [(x, y) for x in range(sc.L - size + 1) for y in range(sc.L - size + 1)
               if all(max(bx0 - (x + size - 1) - 1, x - bx1 - 1, by0 - (y + size - 1) - 1, y - by1 - 1) >= 1
                      for bx0, by0, bx1, by1 in boxes)]
    return corners[int(rng.integers(len(corners)))] if corners else None


def unused_colour(rng, objs):
    used = {o.colour for o in objs}
    return [c for c in sc.COLOURS if c not in used][int(rng.integers(len(sc.COLOURS) - len(used)))]


class SpecConstantsTest(unittest.TestCase):
    def test_palette_and_sizes_are_the_spec(self):
        self.assertEqual(sc.L, 32)
        self.assertEqual(sc.SIZE, 11)
        self.assertEqual(sc.object_size(32), 11)
        self.assertEqual(sc.PALETTE, {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
                                      "yellow": (240, 220, 40), "white": (235, 235, 235)})
        self.assertEqual(sc.SHAPES, ("square", "circle", "triangle"))
        self.assertEqual(sc.SHAPE_WORDS, {"square": ("square", "cube", "box"), "circle": ("circle", "sphere", "ball"),
                                          "triangle": ("triangle", "pyramid")})
        self.assertEqual(sc.RELATIONS, ("left of", "right of", "above", "below"))
        self.assertEqual(sc.RELATION_WORDS, {"left of": ("left of", "to the left of"),
                                             "right of": ("right of", "to the right of"),
                                             "above": ("above", "over"), "below": ("below", "under")})
        self.assertEqual(sc.SIDES, ("left", "right", "top", "bottom"))

    def test_shapes_fill_their_box_as_specified(self):
        a = sc.SIZE
        for shape in sc.SHAPES:
            m = sc.shape_mask(shape, a)
            self.assertTrue(m.any(axis=1).all() and m.any(axis=0).all(), f"{shape}: bounding box is not a×a")
            self.assertTrue((m == m[:, ::-1]).all(), f"{shape}: not left-right symmetric")
        tri = sc.shape_mask("triangle", a)
        self.assertEqual(tri[-1].sum(), a)                     # base a at the bottom
        self.assertEqual(list(np.flatnonzero(tri[0])), [a // 2])  # apex at the top centre
        self.assertTrue(all(tri[i].sum() <= tri[i + 1].sum() for i in range(a - 1)))
        circle = sc.shape_mask("circle", a)
        self.assertTrue((circle == circle.T).all())
        self.assertEqual(circle[a // 2].sum(), a)              # diameter a
        img = sc.render([Obj("blue", "square", 16, 16)])
        self.assertEqual(img.dtype, np.uint8)
        self.assertEqual(img.shape, (32, 32, 3))
        self.assertEqual({tuple(p) for p in img.reshape(-1, 3)}, {(0, 0, 0), (50, 90, 240)})
        self.assertEqual(sc.box(Obj("blue", "square", 16, 16)), (11, 11, 21, 21))
        with self.assertRaises(ValueError):
            sc.render([Obj("red", "circle", 4, 16)])           # box would start at column −1


class SamplingTest(unittest.TestCase):
    def test_every_sampled_scene_obeys_its_rules(self):
        rng = np.random.default_rng(1)
        xs = collections.defaultdict(set)
        for spec, objs in sample(rng, 3000):
            ok, why = sc.check_scene(spec, objs)
            self.assertTrue(ok, f"{spec}: {objs}: {why}")
            key = spec.kind if spec.kind != "side" else spec.side
            xs[key].add(objs[0].cx)
        # placements reach every allowed centre column (uniform among allowed ones)
        self.assertEqual(xs["centre"], set(range(11, 21)))
        self.assertEqual(xs["left"], set(range(5, 11)))
        self.assertEqual(xs["right"], set(range(21, 27)))
        self.assertEqual(xs["top"], set(range(11, 21)))
        self.assertEqual(xs["relation"], set(range(5, 27)))

    def test_forms_sides_and_relations_in_equal_shares_and_held_out_respected(self):
        rng = np.random.default_rng(2)
        n = 6000
        specs = [sc.sample_spec(rng) for _ in range(n)]
        kinds = collections.Counter(s.kind for s in specs)
        for k in sc.KINDS:
            self.assertAlmostEqual(kinds[k] / n, 1 / 3, delta=0.025, msg=kinds)
        sides = collections.Counter(s.side for s in specs if s.side)
        rels = collections.Counter(s.relation for s in specs if s.relation)
        for c in (sides, rels):
            for v in c.values():
                self.assertAlmostEqual(v / sum(c.values()), 0.25, delta=0.03, msg=c)
        self.assertFalse(any(sc.is_held_out(s) for s in specs))
        for s in specs:
            if s.kind == "relation":
                self.assertNotEqual(s.objects[0][0], s.objects[1][0])
        held = [sc.sample_spec(rng, held_out=True) for _ in range(800)]
        self.assertTrue(all(sc.is_held_out(s) for s in held))
        rels = collections.Counter(s.relation for s in held)
        for v in rels.values():
            self.assertAlmostEqual(v / 800, 0.25, delta=0.05, msg=rels)
        anyone = [sc.sample_spec(rng, held_out=None) for _ in range(3000)]
        frac = sum(sc.is_held_out(s) for s in anyone) / sum(s.kind == "relation" for s in anyone)
        self.assertAlmostEqual(frac, 0.1, delta=0.03)


class JudgeTest(unittest.TestCase):
    def test_accepts_every_clean_render(self):
        rng = np.random.default_rng(3)
        items = sample(rng, 1800, held_out=None) + sample(rng, 200, held_out=True)
        self.assertEqual({s.kind for s, _ in items}, set(sc.KINDS))
        failures = []
        for i, (spec, objs) in enumerate(items):
            img = sc.render(objs)
            text = sc.prompt_text(spec, rng if i % 2 else None)
            for prompt in (spec, text):
                ok, why = sc.judge(img, prompt)
                if not ok:
                    failures.append((text, objs, why))
        self.assertEqual(failures, [])

    def test_rejects_perturbed_renders(self):
        rng = np.random.default_rng(4)
        counts = collections.Counter()

        def rejected(img, prompt, what, why_has=None):
            ok, why = sc.judge(img, prompt)
            self.assertFalse(ok, f"{what}: accepted {prompt}")
            if why_has:
                self.assertIn(why_has, why, what)
            counts[what] += 1

        for spec, objs in sample(rng, 300, held_out=None):
            text = sc.prompt_text(spec, rng)
            for i, o in enumerate(objs):
                others = objs[:i] + objs[i + 1:]
                wrong = unused_colour(rng, objs)
                rejected(sc.render(others + [Obj(wrong, o.shape, o.cx, o.cy)]), text, "wrong colour",
                         f"no {o.colour} object")
                for shape in sc.SHAPES:
                    if shape != o.shape:
                        rejected(sc.render(others + [Obj(o.colour, shape, o.cx, o.cy)]), text, "wrong shape",
                                 f"is a {shape}")
                rejected(sc.render(others), text, "missing object", f"no {o.colour} object")
            if spec.kind == "relation":
                a, b = objs
                swapped = [Obj(a.colour, a.shape, b.cx, b.cy), Obj(b.colour, b.shape, a.cx, a.cy)]
                rejected(sc.render(swapped), text, "swapped relation", "is not")
                (ca, sa), (cb, sb) = spec.objects
                rejected(sc.render(objs), Spec.relate(ca, sa, sc.MIRROR[spec.relation], cb, sb),
                         "opposite relation", "is not")
            else:
                (c, s), = spec.objects
                for other in [Spec.centre(c, s)] + [Spec.on_side(c, s, d) for d in sc.SIDES]:
                    if other != spec:
                        rejected(sc.render(objs), other, "wrong position", "thirds")
            place = free_place(rng, objs)
            if place is not None:
                a = sc.SIZE
                extra = Obj(unused_colour(rng, objs), sc.SHAPES[int(rng.integers(3))], place[0] + a // 2,
                            place[1] + a // 2)
                rejected(sc.render(objs + [extra]), text, "extra object", "extra object")
            place = free_place(rng, objs, 6)
            if place is not None:
                img = sc.render(objs)
                img[place[1]:place[1] + 6, place[0]:place[0] + 6] = sc.PALETTE[unused_colour(rng, objs)]
                rejected(img, text, "extra 6×6 block", "extra object")
        for what, least in (("wrong colour", 400), ("wrong shape", 800), ("missing object", 400),
                            ("swapped relation", 70), ("opposite relation", 70), ("wrong position", 600),
                            ("extra object", 200), ("extra 6×6 block", 250)):
            self.assertGreaterEqual(counts[what], least, f"{what}: only {counts[what]} cases ({counts})")

    def test_mild_perturbations_still_pass(self):
        rng = np.random.default_rng(5)
        shifted = specks = 0
        for spec, objs in sample(rng, 400, held_out=None):
            text = sc.prompt_text(spec, rng)
            img = sc.render(objs)
            noisy = np.clip(np.rint(img + rng.normal(0, 10, img.shape)), 0, 255).astype(np.uint8)
            ok, why = sc.judge(noisy, text)
            self.assertTrue(ok, f"σ=10 noise: {text}: {why}")
            for i, o in enumerate(objs):
                for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    moved = list(objs)
                    moved[i] = Obj(o.colour, o.shape, o.cx + dx, o.cy + dy)
                    if sc.check_scene(spec, moved)[0]:
                        ok, why = sc.judge(sc.render(moved), text)
                        self.assertTrue(ok, f"1-px shift {dx, dy} of {o}: {text}: {why}")
                        shifted += 1
            place = free_place(rng, objs, 5)
            if place is not None:
                speck = img.copy()
                speck[place[1]:place[1] + 5, place[0]:place[0] + 5] = sc.PALETTE[unused_colour(rng, objs)]
                ok, why = sc.judge(speck, text)
                self.assertTrue(ok, f"5×5 speck: {text}: {why}")
                specks += 1
        self.assertGreater(shifted, 1000)
        self.assertGreater(specks, 300)

    def test_reads_back_what_was_drawn(self):
        found = sc.detect(sc.render([Obj("red", "triangle", 8, 8), Obj("white", "circle", 24, 20)]))
        self.assertEqual(set(found), {"red", "white"})
        self.assertEqual(found["red"].shape, "triangle")
        self.assertEqual(found["red"].bbox, (3, 3, 13, 13))
        self.assertEqual(found["white"].shape, "circle")
        self.assertEqual(found["white"].area, int(sc.shape_mask("circle", 11).sum()))

    def test_component_labelling_is_4_connected(self):
        mask = np.zeros((6, 6), bool)
        mask[0, 0] = mask[1, 1] = mask[2, 2] = True           # diagonal: three components of one pixel
        mask[4, 1:5] = True                                    # a row of four
        mask[3, 4] = True                                      # joins it from above
        ys, xs = sc.largest_component(mask)
        self.assertEqual(sorted(zip(ys.tolist(), xs.tolist())), [(3, 4), (4, 1), (4, 2), (4, 3), (4, 4)])
        ys, xs = sc.largest_component(np.eye(4, dtype=bool))
        self.assertEqual(len(ys), 1)
        self.assertEqual(len(sc.largest_component(np.zeros((3, 3), bool))[0]), 0)


class GrammarTest(unittest.TestCase):
    def test_round_trip_over_every_synonym(self):
        n = 0
        for spec in all_specs():
            self.assertEqual(sc.parse_prompt(sc.prompt_text(spec)), spec)
            for text in all_texts(spec):
                self.assertEqual(sc.parse_prompt(text), spec, text)
                n += 1
        # words per shape 3 + 3 + 2 = 8: centre 5·8, sides 5·8·4, relations 20 colour pairs · 4 · 8·2·8
        self.assertEqual(n, 40 + 160 + 20 * 4 * 8 * 2 * 8)

    def test_random_synonyms_are_uniform_and_parse_back(self):
        rng = np.random.default_rng(6)
        words = collections.Counter()
        spec = Spec.relate("red", "square", "left of", "blue", "circle")
        texts = set(all_texts(spec))
        for _ in range(1200):
            text = sc.prompt_text(spec, rng)
            self.assertIn(text, texts)
            self.assertEqual(sc.parse_prompt(text), spec)
            words[text] += 1
        self.assertEqual(set(words), texts)                     # 3 × 2 × 3 = 18 forms, each ≈ 1/18
        for v in words.values():
            self.assertAlmostEqual(v / 1200, 1 / 18, delta=0.03)
        self.assertEqual(sc.prompt_text(spec), "a red square left of a blue circle")
        self.assertEqual(sc.prompt_text(Spec.on_side("white", "triangle", "top")), "a white triangle on the top")
        self.assertEqual(sc.prompt_text(Spec.centre("green", "circle")), "a green circle")
        self.assertEqual(sc.parse_prompt("  a green   ball "), Spec.centre("green", "circle"))

    def test_rejects_anything_else_naming_the_problem(self):
        bad = {
            "": "empty",
            "a purple square": "purple",
            "a red cone": "cone",
            "a red": "shape",
            "red square": "'a'",
            "the red square": "'the'",
            "A red square": "lower case",
            "a red square on the middle": "on the",
            "a red square on left": "on the",
            "a red square on the left please": "on the",
            "a red square near a blue circle": "near",
            "a red square left a blue circle": "left",
            "a red square to the left a blue circle": "to",
            "a red square left of": "ended",
            "a red square left of a blue": "ended",
            "a red square left of blue circle": "'blue'",
            "a red square left of a red circle": "different colours",
            "a red square left of a blue circle now": "now",
            "a red square, left of a blue circle": "square,",
        }
        for text, part in bad.items():
            with self.assertRaises(ValueError, msg=text) as cm:
                sc.parse_prompt(text)
            self.assertIn(part, str(cm.exception), text)
        with self.assertRaises(ValueError):
            sc.judge(np.zeros((32, 32, 3), np.uint8), "a red cone")


class HeldOutTest(unittest.TestCase):
    def test_a_tenth_closed_under_mirror_and_every_value_still_trained(self):
        combos = sc._all_combos()
        self.assertEqual(len(combos), 720)
        self.assertEqual(len(sc.HELD_OUT), 72)
        self.assertTrue(sc.HELD_OUT <= set(combos))
        self.assertTrue(all(sc._mirror(c) in sc.HELD_OUT for c in sc.HELD_OUT))
        trained = [c for c in combos if c not in sc.HELD_OUT]
        values = (sc.COLOURS, sc.SHAPES, sc.RELATIONS, sc.COLOURS, sc.SHAPES)
        for i, vals in enumerate(values):
            self.assertEqual({c[i] for c in trained}, set(vals))
            self.assertEqual({c[i] for c in sc.HELD_OUT}, set(vals))   # and each is tested held out too

    def test_documented_list_is_the_code_list(self):
        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        listed = set(re.findall(r"^\s*(a \w+ \w+ (?:left of|above) a \w+ \w+)\s*$", doc, re.M))
        self.assertEqual(len(listed), 36)
        specs = {sc.parse_prompt(t) for t in listed}
        self.assertEqual({s.combo for s in specs} | {sc._mirror(s.combo) for s in specs}, set(sc.HELD_OUT))


class EvalSetTest(unittest.TestCase):
    def test_deterministic_balanced_and_with_synonyms(self):
        a = sc.eval_set(300, seed=7)
        self.assertEqual(a, sc.eval_set(300, seed=7))
        self.assertNotEqual(a, sc.eval_set(300, seed=8))
        specs = [sc.parse_prompt(t) for t in a]
        kinds = collections.Counter(s.kind for s in specs)
        self.assertEqual(set(kinds.values()), {100})
        self.assertEqual(collections.Counter(s.side for s in specs if s.side)[sc.SIDES[0]], 25)
        self.assertEqual(set(collections.Counter(s.relation for s in specs if s.relation).values()), {25})
        self.assertFalse(any(sc.is_held_out(s) for s in specs))
        self.assertTrue(any(w in t.split() for t in a for w in ("cube", "box", "sphere", "ball", "pyramid")))
        self.assertTrue(any("to the" in t for t in a))
        held = [sc.parse_prompt(t) for t in sc.eval_set(200, seed=7, held_out=True)]
        self.assertTrue(all(sc.is_held_out(s) for s in held))
        self.assertEqual(set(collections.Counter(s.relation for s in held).values()), {50})
        # pinned: a change of the numpy stream or of the sampling code changes the evaluation set
        self.assertEqual(sc.eval_set(6, 0), [
            "a red circle left of a green box", "a green square on the left", "a yellow pyramid",
            "a yellow cube to the right of a white box", "a white sphere", "a yellow pyramid on the right"])


class GridTest(unittest.TestCase):
    def test_grid_png(self):
        try:
            import PIL  # noqa: F401
        except ImportError:
            self.skipTest("PIL not installed")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "grid.png")
            sc.main(["--grid", out, "--n", "8"])
            self.assertGreater(os.path.getsize(out), 500)


if __name__ == "__main__":
    unittest.main()
