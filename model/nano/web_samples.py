"""Sample scenes for the web chat's gallery, drawn by the world generator the model was trained on
(a visitor's own photos are outside that world), each with its caption as the image's text
alternative. Fixed seeds, so rerunning writes the same files.

    /usr/bin/python3 -m model.nano.web_samples [--out web/public/samples] [--count 16]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

from . import world as W
from .tasks import caption

SEED = 20261130


def write_samples(out: str, count: int) -> list[dict]:
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    entries = []
    for i in range(count):
        # Every scene has at least one person and two shapes, so every task has something to show.
        scene = W.sample_scene(rng, n_shapes=int(rng.integers(2, 5)), n_people=int(rng.integers(1, 3)))
        image, _ = W.render(scene)
        name = f"scene-{i:02d}.png"
        Image.fromarray(image).save(os.path.join(out, name), optimize=True)
        entries.append({"file": name, "caption": caption(scene)})
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="web/public/samples")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    entries = write_samples(args.out, args.count)
    print(f"{len(entries)} sample scenes in {args.out}")


if __name__ == "__main__":
    main()
