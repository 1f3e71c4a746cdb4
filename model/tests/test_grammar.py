"""The phrase grammar: held-out wordings never reach training, held-out requests always use them,
and answers stay canonical whatever the user's synonyms."""

import unittest

import numpy as np

from model.nano import grammar as G
from model.nano import tasks as T
from model.nano.infer import label_before

FAMILIES = ["questions", "region", "detection", "segmentation", "grounding", "pose", "generation", "editing"]


def held_out_markers() -> list[str]:
    """Distinctive lower-case pieces of every held-out frame and slot value."""
    marks = []
    for frames in [
        G.PERCEPTION_FRAMES,
        G.DETECTION_QUESTIONS,
        G.GROUNDING_FRAMES,
        G.POSE_FRAMES,
        G.REGION_FRAMES,
        G.GENERATION_FRAMES,
        *G.QUESTION_FRAMES.values(),
        *G.EDIT_FRAMES.values(),
    ]:
        for f in frames[1]:
            words = [w for w in f.lower().split() if "{" not in w]
            marks.append(" ".join(words[:3]))
    for name, (_, held) in G.SLOTS.items():
        marks += [v.strip().lower() for v in held if v.strip()]
    return [m for m in marks if m]


CATEGORIES = ["red circle", "diamond", "purple object", "shape", "person", "blue square", "triangle"]


def requests(split: str, n: int) -> list[str]:
    """Requests of every family straight from the grammar (no scenes to render: fast)."""
    rng = np.random.default_rng(7)
    makers = [
        lambda: G.detection_request(
            rng, list(rng.choice(CATEGORIES, size=int(rng.integers(1, 4)), replace=False)), split, False
        ),
        lambda: G.detection_request(
            rng, list(rng.choice(CATEGORIES, size=int(rng.integers(1, 4)), replace=False)), split, True
        ),
        lambda: G.grounding_request(rng, "the leftmost purple diamond", split),
        lambda: G.pose_request(rng, split),
        lambda: G.region_request(rng, "<reg>region1<region></reg>", split),
        lambda: G.question_request(rng, "count", split, pl="violet rhombuses"),
        lambda: G.question_request(rng, "exist", split, a="a", cat="disc"),
        lambda: G.generation_request(rng, [("red", "circle", "on the left"), ("blue", "diamond", None)], "grey", split),
        lambda: G.edit_request(rng, "remove", split, e="the red square"),
    ]
    return [makers[i % len(makers)]().lower() for i in range(n)]


class GrammarTest(unittest.TestCase):
    def test_training_never_sees_a_held_out_frame_verb_or_list_form(self):
        texts = requests("train", 1600)
        for mark in [" as well as ", "spot ", "pick out", "whereabouts", "help me ", "time to ", "trace ", "cut out"]:
            self.assertFalse(any(mark in t for t in texts), mark)

    def test_every_held_out_request_uses_a_held_out_element(self):
        marks = held_out_markers()
        for text in requests("heldout", 400):
            self.assertTrue(any(m.split()[0] in text for m in marks), text)

    def test_thousands_of_surface_forms_per_family(self):
        forms = set(requests("train", 18000)[::9])  # detection requests only
        self.assertGreater(len(forms), 1500)

    def test_answers_are_canonical_and_name_the_asked_categories_in_order(self):
        rng = np.random.default_rng(5)
        for _ in range(60):
            s = T.FAMILIES["detection"](rng, split="heldout")
            answer = s.turns[0][1]
            cats = [c.phrase for c in s.calls]
            positions = [answer.index(c + "[DET]") for c in cats]
            self.assertEqual(positions, sorted(positions))
            self.assertNotIn("rhombus", answer)
            self.assertNotIn("violet", answer)

    def test_a_grounding_group_is_labelled_with_its_expression(self):
        rng = np.random.default_rng(9)
        for _ in range(20):
            s = T.grounding(rng)
            answer = s.turns[0][1]
            self.assertEqual(label_before(answer.split("[GRD]")[0]), s.calls[0].phrase)

    def test_synonyms_and_plurals(self):
        self.assertEqual(G.plural("violet rhombus"), "violet rhombuses")
        self.assertEqual(G.plural("stick figure"), "stick figures")
        self.assertEqual(G.plural("person"), "people")
        rng = np.random.default_rng(0)
        self.assertIn(G.surface(rng, "purple diamond").split()[0], ("purple", "violet"))

    def test_list_forms(self):
        rng = np.random.default_rng(1)
        joined = {G.join_list(rng, ["a", "b", "c"], "train") for _ in range(200)}
        self.assertTrue({"a, b and c", "a, b, c", "a, b, and c", "a, b plus c"} <= joined)
        self.assertFalse(any("as well as" in j or " or " in j for j in joined))

    def test_shouted_requests_keep_their_region_tags(self):
        ref = "<reg>region1<region></reg>"
        self.assertEqual(G.upper_outside_tags(f"what is {ref}?"), f"WHAT IS {ref}?")
        texts = [G.region_request(np.random.default_rng(i), ref, "train") for i in range(300)]
        self.assertTrue(all(ref in t for t in texts))
        self.assertTrue(any(t.startswith(("WHAT", "NAME", "IDENTIFY", "CAN", "TELL", "PLEASE")) for t in texts))

    def test_training_chatter_surrounds_requests_and_never_reaches_held_out_ones(self):
        chatter = [c.strip().lower() for c in G.CHATTER_BEFORE + G.CHATTER_AFTER]
        train = requests("train", 900)
        held = requests("heldout", 900)
        self.assertGreater(sum(any(t.startswith(c) for c in chatter) for t in train), 100)
        self.assertEqual(sum(any(t.startswith(c) for c in chatter) for t in held), 0)


if __name__ == "__main__":
    unittest.main()
