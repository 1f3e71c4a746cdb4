"""The image autoencoder (the image expert's first part): shapes, edge weighting, resumable training."""

import tempfile
import unittest

import numpy as np
import torch

from model.nano import image_autoencoder as A


class ImageAutoencoderTest(unittest.TestCase):
    def test_latent_grid_and_round_trip_shapes(self):
        model = A.ImageAutoencoder(latent=32, channels=8, width=16)
        x = torch.zeros(2, 3, 128, 128)
        self.assertEqual(tuple(model.encode(x).shape), (2, 8, 32, 32))
        self.assertEqual(tuple(model(x).shape), (2, 3, 128, 128))

    def test_edges_weigh_more_than_flat_areas(self):
        images, _ = A.scenes(np.random.default_rng(0), 1)
        w = A.edge_weight(A.to_tensor(images))
        self.assertGreater(float(w.max()), 1.0)
        self.assertEqual(float(w.min()), 1.0)
        self.assertLess(float((w > 1).float().mean()), 0.5)

    def test_training_resumes_from_its_checkpoint(self):
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as out:
            _, first = A.train(
                out, minutes=1, latent=32, channels=4, batch=2, max_steps=2, width=8, eval_scenes=4, log=lambda _: None
            )
            _, second = A.train(
                out, minutes=1, latent=32, channels=4, batch=2, max_steps=1, width=8, eval_scenes=4, log=lambda _: None
            )
        self.assertEqual(first["steps"], 2)
        self.assertEqual(second["steps"], 3)
        self.assertEqual(second["latent"], [4, 32, 32])


if __name__ == "__main__":
    unittest.main()
