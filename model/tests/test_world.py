"""The world generator keeps its specification (docs/NANO_WORLD.md): objects inside the image and
apart, a mask per object that lies in its box, people with every keypoint, and scenes reproducible
from their seed; and the evaluation's matching scores what it should."""

import unittest

import numpy as np

from model.nano import world as W
from model.nano.evaluate import average_precision, box_iou


class WorldTest(unittest.TestCase):
    def scenes(self, n=40):
        rng = np.random.default_rng(5)
        return [W.sample_scene(rng) for _ in range(n)]

    def test_objects_lie_inside_the_image_and_keep_their_distance(self):
        for scene in self.scenes():
            W.render(scene)
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box
                self.assertTrue(0 <= x0 < x1 <= W.SIZE and 0 <= y0 < y1 <= W.SIZE, obj)
            shapes = [o.box for o in scene.shapes()]
            for i, a in enumerate(shapes):
                for b in shapes[i + 1 :]:
                    self.assertTrue(W.boxes_clear(a, b, gap=0), (a, b))

    def test_each_mask_is_its_objects_pixels_within_its_box(self):
        for scene in self.scenes():
            image, masks = W.render(scene)
            self.assertEqual(image.shape, (W.SIZE, W.SIZE, 3))
            self.assertEqual(image.dtype, np.uint8)
            self.assertEqual(len(masks), len(scene.objects))
            for obj, mask in zip(scene.objects, masks):
                ys, xs = np.nonzero(mask)
                self.assertGreater(len(xs), 0, obj)
                x0, y0, x1, y1 = obj.box
                self.assertTrue(
                    xs.min() >= int(x0) - 1 and xs.max() <= x1 and ys.min() >= int(y0) - 1 and ys.max() <= y1
                )

    def test_people_have_every_keypoint_and_shapes_a_known_kind_and_colour(self):
        for scene in self.scenes():
            for obj in scene.people():
                self.assertEqual(len(obj.keypoints), len(W.KEYPOINTS))
            for obj in scene.shapes():
                self.assertIn(obj.kind, W.KINDS)
                self.assertIn(obj.color, W.COLORS)

    def test_a_seed_draws_the_same_scene_and_image(self):
        a = W.sample_scene(np.random.default_rng(11))
        b = W.sample_scene(np.random.default_rng(11))
        self.assertTrue(np.array_equal(W.render(a)[0], W.render(b)[0]))


class MatchingTest(unittest.TestCase):
    def test_box_iou(self):
        self.assertAlmostEqual(box_iou([0, 0, 10, 10], [0, 0, 10, 10]), 1.0)
        self.assertAlmostEqual(box_iou([0, 0, 10, 10], [5, 0, 15, 10]), 50 / 150)
        self.assertEqual(box_iou([0, 0, 1, 1], [2, 2, 3, 3]), 0.0)

    def test_average_precision(self):
        self.assertAlmostEqual(average_precision([(0.9, True), (0.8, True)], 2), 1.0)
        # A false positive ranked first halves the precision at the only true positive.
        self.assertAlmostEqual(average_precision([(0.9, False), (0.8, True)], 1), 0.5)
        self.assertAlmostEqual(average_precision([(0.9, True)], 2), 0.5)
        self.assertEqual(average_precision([], 3), 0.0)
        self.assertTrue(np.isnan(average_precision([], 0)))


if __name__ == "__main__":
    unittest.main()
