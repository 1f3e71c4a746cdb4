"""A second renderer of the nano world, written apart from `world.render`, for the evaluation only.

Users send scenes that follow docs/NANO_WORLD.md but were drawn by other programs, so the model is
also measured on scenes this module draws from the same scene descriptions: PIL's own rasteriser
(`ImageDraw` polygons, ellipses and lines, which place edge pixels differently from the coverage
sampling in world.py), anti-aliasing by drawing at 4 x and downsampling with a Lanczos filter
instead of box-averaged subsamples, stick-figure limbs as wide lines with round joints, and the
background noise drawn from another generator (uniform, +-8 per channel, as the world allows).
Training never sees it. Masks are the object's own drawn pixels at half coverage, and a person's box
is the tight box of its drawn pixels, as the world requires.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import world as W

SCALE = 4


def _outline(obj: W.Obj, s: float) -> tuple[str, list[tuple[float, float]]]:
    """The shape's primitive at scale s: ("ellipse" | "polygon", points)."""
    x0, y0, x1, y1 = (v * s for v in obj.box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if obj.kind == "circle":
        return "ellipse", [(x0, y0), (x1 - 1, y1 - 1)]
    if obj.kind == "square":
        return "polygon", [(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]
    if obj.kind == "triangle":
        return "polygon", [(cx, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]
    if obj.kind == "diamond":
        return "polygon", [(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)]
    raise ValueError(obj.kind)


def _draw_person(draw: ImageDraw.ImageDraw, obj: W.Obj, s: float) -> None:
    kp = {name: (x * s, y * s) for name, (x, y) in zip(W.KEYPOINTS, obj.keypoints)}
    width = max(1, round(obj.limb_width * s))
    for a, b in W.SKELETON:
        if a != "head":
            draw.line([kp[a], kp[b]], fill=255, width=width, joint="curve")
    for name in W.KEYPOINTS[1:]:
        x, y = kp[name]
        r = width / 2
        draw.ellipse([(x - r, y - r), (x + r, y + r)], fill=255)
    hx, hy = kp["head"]
    r = obj.head_radius * s
    draw.ellipse([(hx - r, hy - r), (hx + r, hy + r)], fill=255)


def coverage(obj: W.Obj, antialias: bool) -> np.ndarray:
    """The object's coverage of each canvas pixel in [0, 1], drawn by PIL."""
    s = SCALE if antialias else 1
    layer = Image.new("L", (W.SIZE * s, W.SIZE * s), 0)
    draw = ImageDraw.Draw(layer)
    if obj.kind == "person":
        _draw_person(draw, obj, s)
    else:
        primitive, points = _outline(obj, s)
        if primitive == "ellipse":
            draw.ellipse(points, fill=255)
        else:
            draw.polygon(points, fill=255)
    if antialias:
        layer = layer.resize((W.SIZE, W.SIZE), Image.LANCZOS)
    return np.asarray(layer, dtype=np.float32) / 255.0


def render(scene: W.Scene) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same contract as `world.render`: uint8 [128, 128, 3] and one boolean mask per object.
    Lanczos rings faintly outside a shape, so a person's box counts pixels covered above 2 %."""
    rng = np.random.Generator(np.random.PCG64DXSM(scene.noise_seed))
    return W.compose(scene, lambda obj: np.clip(coverage(obj, scene.antialias), 0, 1), rng, drawn=0.02)
