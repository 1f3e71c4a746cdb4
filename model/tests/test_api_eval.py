"""The API evaluation reads the wire as the runtime writes it."""

import json
import unittest

import numpy as np

from model.nano.api_eval import collect, content_parts, decode_rle, read_events


def encode_rle(bits: np.ndarray) -> dict:
    """As shared/src/mask.ts encodes: run lengths over row-major pixels, starting with zeros."""
    counts, current, run = [], 0, 0
    for v in bits.flatten().astype(int):
        if v != current:
            counts.append(run)
            run, current = 0, v
        run += 1
    counts.append(run)
    return {"format": "rle-row-major", "width": bits.shape[1], "height": bits.shape[0], "counts": counts}


class ApiEvalTest(unittest.TestCase):
    def test_masks_round_trip(self):
        rng = np.random.default_rng(0)
        for _ in range(20):
            bits = rng.random((7, 5)) < 0.4
            np.testing.assert_array_equal(decode_rle(encode_rle(bits)), bits)

    def test_regions_become_region_parts_where_the_mark_was(self):
        parts = content_parts(
            "What is in <reg>region1<region></reg>?", np.zeros((4, 4, 3), np.uint8), [np.ones((4, 4), bool)]
        )
        self.assertEqual([p["type"] for p in parts], ["image_url", "text", "region", "text"])
        self.assertTrue(parts[2]["region"]["mask"].startswith("data:image/png;base64,"))

    def test_events_become_a_result(self):
        events = [
            {"type": "text-delta", "delta": "Yes, here are the results for circle"},
            {
                "type": "detections",
                "label": "circle",
                "items": [{"score": 0.9, "box": [1, 2, 3, 4], "mask": encode_rle(np.eye(3, dtype=bool))}],
            },
            {"type": "text-delta", "delta": " in the image."},
            {"type": "done", "finish_reason": "stop"},
        ]
        stream = [f"event: {e['type']}\nid: {i}\ndata: {json.dumps(e)}\n\n".encode() for i, e in enumerate(events)]
        lines = [line + b"\n" for chunk in stream for line in chunk.split(b"\n")[:-1]]
        result = collect(read_events(lines))
        self.assertEqual(result.text, "Yes, here are the results for circle in the image.")
        self.assertEqual(result.detections[0]["items"][0]["box"], [1, 2, 3, 4])
        np.testing.assert_array_equal(result.detections[0]["items"][0]["mask"], np.eye(3, dtype=bool))


if __name__ == "__main__":
    unittest.main()
