"""The language corpus (the stand-in for the LLM's text pretraining): synonym sets used in shared
contexts, held-out words among them, and never a request addressed to the model."""

import unittest

import numpy as np

from model.nano import grammar as G
from model.nano import language as Lang
from model.nano import tasks as T


class LanguageTest(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(3)
        self.passages = [Lang.passage(rng) for _ in range(1200)]
        self.text = " ".join(self.passages).lower()

    def test_every_held_out_verb_and_a_training_synonym_appear(self):
        for name in ("det_verb", "seg_verb", "pose_verb", "draw_verb"):
            train, held = G.SLOTS[name]
            for verb in held:
                self.assertIn(f" {verb} ", self.text, verb)
            self.assertTrue(any(f" {v} " in self.text for v in train), name)

    def test_synonyms_share_their_object(self):
        """'To trace the discs is to outline them.': one sentence, one object, two verbs of one set."""
        rng = np.random.default_rng(5)
        for _ in range(200):
            sentence = Lang.verb_sentence(rng).lower()
            sets = [s for s in Lang.VERB_SETS if sum(f" {v} " in f" {sentence} " for v in s) >= 2]
            self.assertTrue(sets, sentence)

    def test_every_verb_meets_its_task_name(self):
        """'Anyone who wants to cut out every disc needs segmentation results': each verb of a set,
        held-out ones included, is seen beside the name its answer uses, and only beside that name."""
        rng = np.random.default_rng(11)
        seen: set[tuple[str, str]] = set()
        for _ in range(3000):
            words = Lang.task_sentence(rng).lower().replace(".", " ").replace(":", " ").replace(",", " ")
            sentence = f" {words} "
            names = [t for t in Lang.TASK_NAMES if f" {t} " in sentence]
            self.assertEqual(len(names), 1, sentence)
            verbs = [v for v in Lang.VERB_SETS[Lang.TASK_NAMES.index(names[0])] if f" {v} " in sentence]
            self.assertTrue(verbs, sentence)
            seen.update((v, names[0]) for v in verbs)
        for verbs, name in zip(Lang.VERB_SETS, Lang.TASK_NAMES):
            self.assertLessEqual(set(verbs), {v for v, n in seen if n == name}, name)
        self.assertIn(("trace", "segmentation"), seen)
        self.assertIn(("cut out", "segmentation"), seen)

    def test_the_segmentation_answer_uses_the_task_name(self):
        """The word the corpus teaches is the word a segmentation answer starts with."""
        sample = T.FAMILIES["segmentation"](np.random.default_rng(2))
        self.assertIn("segmentation results", sample.turns[0][1])

    def test_statements_fill_both_phrases_with_the_same_values(self):
        rng = np.random.default_rng(9)
        for _ in range(200):
            sentence = Lang.phrase_sentence(rng)
            quoted = sentence.split('"')[1::2]
            self.assertEqual(len(quoted), 2, sentence)
            colours = [{c for ws in G.COLOR_WORDS.values() for c in ws if c in q.lower().split()} for q in quoted]
            self.assertTrue(colours[0] == colours[1] or not colours[0] or not colours[1], sentence)

    def test_a_language_sample_has_no_image_and_is_text_only(self):
        sample = T.FAMILIES["language"](np.random.default_rng(1))
        self.assertIsNone(sample.image)
        self.assertEqual(len(sample.turns), 1)
        self.assertIn(sample.turns[0][0].rstrip(".").lower(), [p.rstrip(".").lower() for p in Lang.PROMPTS])


if __name__ == "__main__":
    unittest.main()
