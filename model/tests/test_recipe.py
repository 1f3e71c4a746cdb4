"""The training recipe: which stages train what, and the language pretraining stage."""

import unittest

from model.nano.train import INSTRUCTION_FAMILIES, full_recipe, smoke_recipe


class RecipeTest(unittest.TestCase):
    def test_without_language_minutes_the_recipe_starts_at_chat(self):
        names = [s.name for s in full_recipe(90, 80).stages]
        self.assertEqual(names, ["1-chat", "2-multi-capacity", "3-decoders", "4-instructions"])
        self.assertTrue(all("language" not in s.families for s in full_recipe(90).stages[:3]))

    def test_language_stage_trains_the_llm_alone_on_the_corpus_first(self):
        first = full_recipe(100, 80, 20).stages[0]
        self.assertEqual(first.name, "0-language")
        self.assertEqual(first.families, {"language": 1.0})
        self.assertEqual(set(first.lr), {"llm"})
        self.assertEqual(first.minutes, 20)

    def test_the_corpus_stays_in_every_stage_that_tunes_the_llm(self):
        stages = full_recipe(100, 80, 20).stages
        for stage in stages:
            if "llm" in stage.lr:
                self.assertIn("language", stage.families, stage.name)
        self.assertEqual(stages[-1].families, INSTRUCTION_FAMILIES)

    def test_the_smoke_recipe_runs_every_stage_the_full_one_can(self):
        full = [s.name for s in full_recipe(100, 80, 20).stages]
        self.assertEqual([s.name for s in smoke_recipe().stages], full)


if __name__ == "__main__":
    unittest.main()
