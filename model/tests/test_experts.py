"""The experts' pure parts: targets, peak suppression, box decoding, mask crops, keypoint refinement,
and the graph interface the runtime relies on."""

import unittest

import numpy as np
import torch

from model.nano import pretrain as P
from model.nano import world as W
from model.nano.experts import PerceptionExpert, PoseExpert, crop_to_boxes, decode_boxes, peaks_only
from model.nano.model import SMOKE


class TargetsTest(unittest.TestCase):
    def test_centre_heat_marks_the_centre_cell_with_one(self):
        heat = P.centre_heat([(8.0, 8.0, 40.0, 40.0)])
        self.assertEqual(heat.argmax(), 3 * 16 + 3)  # centre (24, 24) lies in cell (3, 3)
        self.assertEqual(heat.max(), 1.0)
        self.assertTrue(((heat >= 0) & (heat <= 1)).all())

    def test_no_two_world_objects_share_a_centre_cell(self):
        # Shapes only: a person's box is refined when it is drawn, and people are checked in pose.
        rng = np.random.default_rng(0)
        for _ in range(150):
            scene = W.sample_scene(rng)
            cells = [
                int((o.box[1] + o.box[3]) / 2 // 8) * 16 + int((o.box[0] + o.box[2]) / 2 // 8) for o in scene.shapes()
            ]
            self.assertEqual(len(cells), len(set(cells)))

    def test_box_targets_weight_only_cells_near_a_centre(self):
        boxes = [(8.0, 8.0, 40.0, 40.0)]
        heat = P.centre_heat(boxes)
        target, weight = P.box_targets(boxes, heat)
        self.assertEqual(weight[3 * 16 + 3], 1.0)
        self.assertEqual(weight[15 * 16 + 15], 0.0)
        np.testing.assert_allclose(target[3 * 16 + 3], [24 / 128, 24 / 128, 32 / 128, 32 / 128], rtol=1e-6)


class GraphPartsTest(unittest.TestCase):
    def test_peaks_only_keeps_local_maxima(self):
        logits = torch.full((1, 256), -5.0)
        logits[0, 17] = 3.0
        logits[0, 18] = 2.0  # a neighbour of the peak: suppressed
        logits[0, 100] = 1.0  # a separate peak: kept
        out = peaks_only(logits, 16)
        self.assertEqual(out[0, 17].item(), 3.0)
        self.assertEqual(out[0, 100].item(), 1.0)
        self.assertLess(out[0, 18].sigmoid().item(), 1e-6)

    def test_decoded_boxes_stay_near_their_cell_and_inside_0_1_sizes(self):
        boxes = decode_boxes(torch.randn(2, 256, 4, generator=torch.Generator().manual_seed(0)) * 5, 16)
        centres = P.cell_centres(16)
        self.assertTrue(((boxes[..., :2] - centres).abs() <= 2 / 16 + 1e-6).all())
        self.assertTrue(((boxes[..., 2:] >= 0) & (boxes[..., 2:] <= 1)).all())

    def test_crop_keeps_the_mask_inside_the_box_only(self):
        mask = torch.full((1, 64, 64), 5.0)
        boxes = torch.tensor([[[0.25, 0.25, 0.25, 0.25]]])
        crop = crop_to_boxes(mask, boxes)[0, 0]
        self.assertEqual(crop[16, 16].item(), 5.0)
        self.assertEqual(crop[60, 60].item(), -10.0)

    def test_refinement_stays_in_its_window(self):
        expert = PoseExpert(SMOKE, PerceptionExpert(SMOKE).backbone)
        reg = torch.full((1, 1, 11, 2), 0.5)
        heat = torch.zeros(1, 11, 1024)
        heat[:, :, 0] = 50.0  # a strong peak far away (top-left corner) must not pull the point
        xy, _ = expert.refine(reg, heat)
        self.assertTrue(((xy - 0.5).abs() < 0.1).all())

    def test_interfaces_match_the_bundle_graphs(self):
        perception = PerceptionExpert(SMOKE).eval()
        pose = PoseExpert(SMOKE, perception.backbone).eval()
        pixels = torch.zeros(2, 3, 128, 128)
        levels = torch.zeros(2, 3, 256, SMOKE.vit_dim)
        logits, boxes, masks = perception(pixels, levels, torch.zeros(2, SMOKE.link_dim))
        self.assertEqual(
            (tuple(logits.shape), tuple(boxes.shape), tuple(masks.shape)), ((2, 256), (2, 256, 4), (2, 256, 64, 64))
        )
        logits, boxes, kps, scores = pose(
            pixels, levels, torch.zeros(2, SMOKE.link_dim), torch.zeros(2, 11, SMOKE.link_dim)
        )
        self.assertEqual((tuple(kps.shape), tuple(scores.shape)), ((2, 256, 11, 2), (2, 256, 11)))


class StageZeroTest(unittest.TestCase):
    def test_a_few_steps_lower_the_loss_on_a_fixed_batch(self):
        torch.manual_seed(0)
        experts = P.Experts(SMOKE)
        batch = P.expert_batch(np.random.default_rng(0), 4)
        optimizer = torch.optim.AdamW(experts.parameters(), lr=2e-3)
        first = None
        for _ in range(8):
            loss = sum(experts.losses(batch).values())
            first = float(loss) if first is None else first
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.assertLess(float(loss), first)


if __name__ == "__main__":
    unittest.main()
