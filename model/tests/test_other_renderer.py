"""The second renderer draws the same world as world.render, by other means: the same objects in
the same places (masks agree), a different picture (pixels differ), a person's box tight around it."""

import copy
import unittest

import numpy as np

from model.nano import other_renderer
from model.nano import world as W


class OtherRendererTest(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(11)
        self.scenes = [W.sample_scene(rng) for _ in range(30)]

    def test_same_objects_in_the_same_places(self):
        """Limbs are 2 to 3 px wide: a rasteriser that rounds the width or puts the edge a pixel over
        changes a person's mask by a third, so people are held to a lower bound one by one."""
        people = []
        for scene in self.scenes:
            mine, theirs = copy.deepcopy(scene), copy.deepcopy(scene)
            _, masks = W.render(mine)
            _, other = other_renderer.render(theirs)
            for obj, a, b in zip(scene.objects, masks, other):
                iou = (a & b).sum() / max(1, (a | b).sum())
                self.assertGreater(iou, 0.55 if obj.kind == "person" else 0.85, (obj.kind, iou))
                if obj.kind == "person":
                    people.append(iou)
            for p, q in zip(mine.people(), theirs.people()):
                self.assertLessEqual(max(abs(u - v) for u, v in zip(p.box, q.box)), 3.0)
        self.assertGreater(float(np.mean(people)), 0.75)

    def test_a_different_picture_of_the_world(self):
        scene = self.scenes[0]
        a, _ = W.render(copy.deepcopy(scene))
        b, _ = other_renderer.render(copy.deepcopy(scene))
        self.assertEqual(b.shape, (W.SIZE, W.SIZE, 3))
        self.assertEqual(b.dtype, np.uint8)
        self.assertGreater(np.abs(a.astype(int) - b.astype(int)).mean(), 1.0)

    def test_fills_keep_their_colours(self):
        for scene in self.scenes[:10]:
            image, masks = other_renderer.render(copy.deepcopy(scene))
            for obj, mask in zip(scene.objects, masks):
                if obj.kind == "person" or mask.sum() < 50:
                    continue
                inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
                mean = image[inner].mean(axis=0)
                self.assertLess(np.abs(mean - np.array(obj.rgb)).max(), 6, obj.name)


if __name__ == "__main__":
    unittest.main()
