"""The contracts shared with the TypeScript runtime: the committed bundle's manifest matches the
runtime's schema, the chat template renders what training tokenises, and a broken manifest is refused
with the place it breaks."""

import copy
import json
import unittest

import numpy as np

from model.nano import batching as B
from model.nano import contract as C
from model.nano import tasks as T
from model.nano.model import Config
from model.nano.tokenizer import Tokenizer


class ContractTest(unittest.TestCase):
    def setUp(self):
        with open("model/bundle/manifest.json") as f:
            self.manifest = json.load(f)

    def test_the_bundle_manifest_matches_the_runtime_schema_and_this_module(self):
        C.validate_manifest(self.manifest)
        self.assertEqual(self.manifest["chat_template"], C.CHAT_TEMPLATE)
        self.assertEqual(self.manifest["system_prompt"], C.SYSTEM_PROMPT)
        self.assertEqual(self.manifest["routing"], C.ROUTING)
        self.assertEqual(self.manifest["postprocess"], C.POSTPROCESS)
        self.assertEqual(self.manifest["answer_format"], C.ANSWER_FORMAT)

    def test_a_routing_label_is_the_phrase_before_the_token(self):
        self.assertEqual(C.routing_label(" Yes, here are the results for circle, red square"), "red square")
        self.assertEqual(C.routing_label(" Yes, here are the results for person, with keypoints head"), "head")
        self.assertEqual(C.routing_label(" Yes, the leftmost shape"), "the leftmost shape")

    def test_a_broken_manifest_is_refused_with_where_it_breaks(self):
        broken = copy.deepcopy(self.manifest)
        broken["routing"]["[DET]"]["table"] = "no_such_table"
        del broken["postprocess"]["score_threshold"]
        with self.assertRaises(ValueError) as raised:
            C.validate_manifest(broken)
        self.assertIn("routing/[DET]/table", str(raised.exception))
        self.assertIn("score_threshold", str(raised.exception))

    def test_turn_pieces_concatenate_to_the_rendered_conversation(self):
        asked, answer = C.turn_pieces("Where is <image> the disc?", "Here.")
        self.assertEqual(asked, " USER: Where is <image> the disc? ASSISTANT:")
        self.assertEqual(answer, " Here.</s>")
        messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        self.assertEqual(C.render_chat(messages), C.render_chat([]) + "".join(C.turn_pieces("a", "b")))

    def test_training_tokenises_the_turns_the_template_renders(self):
        tok = Tokenizer.load("model/bundle/tokenizer.json")
        cfg = Config(vocab_size=tok.size)
        rng = np.random.default_rng(3)
        for family in ("questions", "detection", "multi_turn", "chat"):
            sample = T.FAMILIES[family](rng)
            ids, labeled = B.encode_turns(tok, cfg, sample.turns)
            text, spans = T.render_prompt(sample)
            self.assertEqual(tok.decode(ids, skip_special=False), B.expand_image(text, cfg))
            answers = tok.decode([i for i, keep in zip(ids, labeled) if keep], skip_special=False)
            self.assertEqual(answers, "".join(text[a:b] for a, b in spans))


if __name__ == "__main__":
    unittest.main()
