"""The wording probe's grouping of held-out requests by the held-out element they have."""

import unittest

from model.nano.wording_probe import groups_of


class GroupsTest(unittest.TestCase):
    def test_held_out_and_training_verbs(self):
        self.assertIn("verb: held-out", groups_of("Help me trace every disc.", 1, "segmentation"))
        self.assertIn("verb: held-out", groups_of("CUT OUT the squares", 1, "segmentation"))
        self.assertIn("verb: training", groups_of("Outline every disc.", 1, "segmentation"))
        self.assertIn("verb: held-out", groups_of("Spot all the figures.", 1, "detection"))
        self.assertIn("verb: training", groups_of("Detect every spotted thing.", 1, "detection"))

    def test_list_forms(self):
        self.assertIn("list: or", groups_of("Find circles or squares.", 2, "detection"))
        self.assertIn("list: as well as", groups_of("Find circles as well as squares.", 2, "detection"))
        self.assertIn("list: training form", groups_of("Find circles, squares and figures.", 3, "detection"))
        self.assertIn("list: single", groups_of("Find the circles.", 1, "detection"))

    def test_every_request_counts_in_all(self):
        self.assertEqual(groups_of("Find the circles.", 1, "detection")[0], "all")


if __name__ == "__main__":
    unittest.main()
