"""The tokenizer: a vocabulary extended from a trained one keeps every id the LLM knows, and a run
trained with the smaller one is widened with it (embeddings and output rows)."""

import os
import tempfile
import unittest

import torch

from model.nano import grammar as G
from model.nano.pipeline import tokenizer_texts, widen_run
from model.nano.tokenizer import Tokenizer, train_bpe


class TokenizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.texts, cls.corpus = tokenizer_texts(150, 300)
        cls.base = train_bpe(cls.texts, 400)
        cls.wide = train_bpe(cls.texts + cls.corpus, 520, start=cls.base)

    def test_extension_keeps_the_ids_and_merges_it_started_from(self):
        self.assertEqual(self.wide.size, 520)
        for token, i in self.base.vocab.items():
            self.assertEqual(self.wide.vocab[token], i, token)
        self.assertEqual(self.wide.merges[: len(self.base.merges)], self.base.merges)

    def test_the_bundle_reads_the_held_out_verbs_as_whole_words(self):
        """The instructions never use "trace": the shipped vocabulary has it, and the other held-out
        verbs, as single tokens (learnt from the corpus), not as fragments."""
        shipped = Tokenizer.load("model/bundle/tokenizer.json")
        held = [v for name in ("det_verb", "seg_verb", "draw_verb") for v in G.SLOTS[name][1]]
        for verb in held:
            self.assertEqual(len(shipped.encode(" " + verb)), len(verb.split()), verb)

    def test_text_round_trips(self):
        for text in self.texts[:50] + self.corpus[:50]:
            self.assertEqual(self.wide.decode(self.wide.encode(text), skip_special=False), text)


class WidenRunTest(unittest.TestCase):
    def test_new_rows_start_from_their_fragments(self):
        texts, _ = tokenizer_texts(150, 0)
        base = train_bpe(texts, 400)
        with tempfile.TemporaryDirectory() as out:
            embed, head = torch.randn(base.size, 8), torch.randn(base.size, 8)
            model = {"llm.embed_tokens.weight": embed, "llm.lm_head.weight": head}
            torch.save({"model": model, "optimizer": {"state": 1}, "state": {}}, os.path.join(out, "checkpoint.pt"))
            wide = widen_run(out, base, 450, samples=150)
            saved = torch.load(os.path.join(out, "checkpoint.pt"))
            self.assertIsNone(saved["optimizer"])
            new_embed, new_head = saved["model"]["llm.embed_tokens.weight"], saved["model"]["llm.lm_head.weight"]
            self.assertEqual(tuple(new_embed.shape), (450, 8))
            self.assertTrue(torch.equal(new_embed[: base.size], embed))
            token = wide.size - 1
            pieces = base.encode(wide.decode([token]))
            self.assertGreater(len(pieces), 1)
            self.assertTrue(torch.allclose(new_embed[token], embed[pieces].mean(0)))
            self.assertTrue(torch.equal(new_head[token], head[pieces[0]]))
            self.assertTrue(os.path.exists(os.path.join(out, "tokenizer.json")))


if __name__ == "__main__":
    unittest.main()
