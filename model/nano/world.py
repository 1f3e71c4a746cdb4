"""The nano world (docs/NANO_WORLD.md, v1): seedable scenes, renderer and ground truth.

This module is the single source of truth for scenes inside the project: training data, golden
references, evaluation and the TypeScript test fixtures all come from `sample_scene` + `render`.
Coordinates are pixels of the 128 x 128 canvas, boxes are [x0, y0, x1, y1] with x1/y1 exclusive
edges of the tight pixel box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SIZE = 128
BACKGROUNDS = {
    "white": (245, 245, 245),
    "grey": (215, 215, 215),
    "beige": (240, 230, 205),
    "pale blue": (215, 230, 245),
}
COLORS = {
    "red": (220, 50, 50),
    "green": (50, 170, 70),
    "blue": (50, 90, 220),
    "yellow": (235, 200, 40),
    "purple": (150, 70, 190),
}
KINDS = ["circle", "square", "triangle", "diamond"]
PERSON_RGB = (50, 50, 50)
KEYPOINTS = [
    "head",
    "neck",
    "left_shoulder",
    "right_shoulder",
    "left_hand",
    "right_hand",
    "hip",
    "left_knee",
    "right_knee",
    "left_foot",
    "right_foot",
]
SKELETON = [
    ("head", "neck"),
    ("neck", "left_shoulder"),
    ("neck", "right_shoulder"),
    ("left_shoulder", "left_hand"),
    ("right_shoulder", "right_hand"),
    ("neck", "hip"),
    ("hip", "left_knee"),
    ("left_knee", "left_foot"),
    ("hip", "right_knee"),
    ("right_knee", "right_foot"),
]
MIN_GAP = 2


@dataclass
class Obj:
    kind: str  # one of KINDS or "person"
    color: str | None  # None for people
    box: tuple[float, float, float, float]  # placement box (shapes: exact; people: refined after render)
    rgb: tuple[int, int, int] = (0, 0, 0)
    keypoints: list[tuple[float, float]] = field(default_factory=list)
    head_radius: float = 0.0
    limb_width: float = 0.0

    @property
    def name(self) -> str:
        return "person" if self.kind == "person" else f"{self.color} {self.kind}"

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


@dataclass
class Scene:
    background: str
    objects: list[Obj]
    antialias: bool
    noise_seed: int

    def shapes(self) -> list[Obj]:
        return [o for o in self.objects if o.kind != "person"]

    def people(self) -> list[Obj]:
        return [o for o in self.objects if o.kind == "person"]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def boxes_clear(a: tuple[float, ...], b: tuple[float, ...], gap: float = MIN_GAP) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def person_skeleton(rng: np.random.Generator, height: float) -> tuple[list[tuple[float, float]], float, float]:
    """Keypoints relative to (midline x = 0, head top y = 0); returns (keypoints, head radius, limb width)."""
    r = float(rng.uniform(4, 7))
    head = (0.0, r)
    neck = (0.0, 2 * r + 0.06 * height)
    hip = (0.0, neck[1] + 0.33 * height)
    shoulder_dx = 0.09 * height + 1
    shoulder_y = neck[1] + 0.04 * height
    arm = 0.27 * height
    kps: dict[str, tuple[float, float]] = {"head": head, "neck": neck, "hip": hip}
    for side, sign in (("left", -1.0), ("right", 1.0)):
        shoulder = (sign * shoulder_dx, shoulder_y)
        # 0 rad = hanging straight down, up to ~130 degrees = raised outward; never across the midline.
        angle = float(rng.uniform(0.15, 2.3))
        hand = (shoulder[0] + sign * arm * math.sin(angle), shoulder[1] + arm * math.cos(angle))
        kps[f"{side}_shoulder"] = shoulder
        kps[f"{side}_hand"] = hand
    leg_total = height - hip[1]
    spread = math.radians(float(rng.uniform(10, 60)))
    for side, sign in (("left", -1.0), ("right", 1.0)):
        a = spread / 2 * float(rng.uniform(0.7, 1.3))
        leg = leg_total / math.cos(a)
        knee_bend = float(rng.uniform(-0.04, 0.04)) * height
        foot = (sign * leg * math.sin(a), hip[1] + leg * math.cos(a))
        knee = ((hip[0] + foot[0]) / 2 + sign * abs(knee_bend), (hip[1] + foot[1]) / 2)
        kps[f"{side}_knee"] = knee
        kps[f"{side}_foot"] = foot
    width = float(rng.uniform(2, 3))
    return [kps[k] for k in KEYPOINTS], r, width


def _person_extent(kps: list[tuple[float, float]], r: float, w: float) -> tuple[float, float, float, float]:
    xs = [p[0] for p in kps]
    ys = [p[1] for p in kps]
    pad = w / 2 + 0.5
    return (min(min(xs) - pad, -r), 0.0, max(max(xs) + pad, r), max(ys) + pad)


def _place(rng: np.random.Generator, w: float, h: float, placed: list[tuple[float, ...]], region=None, tries: int = 60):
    lo_x, lo_y, hi_x, hi_y = region if region is not None else (0, 0, SIZE, SIZE)
    for _ in range(tries):
        x0_max = min(hi_x, SIZE) - w
        y0_max = min(hi_y, SIZE) - h
        if x0_max < lo_x or y0_max < lo_y:
            return None
        x0 = float(rng.uniform(lo_x, x0_max))
        y0 = float(rng.uniform(lo_y, y0_max))
        box = (x0, y0, x0 + w, y0 + h)
        if all(boxes_clear(box, other, MIN_GAP + 1) for other in placed):
            return box
    return None


def make_shape(rng: np.random.Generator, kind: str, color: str, placed: list, region=None, side=None) -> Obj | None:
    s = float(side if side is not None else rng.integers(16, 41))
    box = _place(rng, s, s, placed, region)
    if box is None:
        return None
    # Integer-aligned boxes keep the ground truth exactly equal to the drawn pixels.
    box = tuple(float(round(v)) for v in box)
    if box[2] > SIZE or box[3] > SIZE:
        return None
    if not all(boxes_clear(box, other) for other in placed):
        return None
    return Obj(kind=kind, color=color, box=box, rgb=_jitter(rng, COLORS[color], 10))


def make_person(rng: np.random.Generator, placed: list) -> Obj | None:
    height = float(rng.uniform(48, 90))
    kps, r, w = person_skeleton(rng, height)
    ex0, ey0, ex1, ey1 = _person_extent(kps, r, w)
    box = _place(rng, ex1 - ex0 + 1, ey1 - ey0 + 1, placed)
    if box is None:
        return None
    ox, oy = box[0] - ex0, box[1] - ey0
    kps = [(x + ox, y + oy) for x, y in kps]
    return Obj(
        kind="person", color=None, box=box, rgb=_jitter(rng, PERSON_RGB, 10), keypoints=kps, head_radius=r, limb_width=w
    )


def sample_scene(rng: np.random.Generator, n_shapes: int | None = None, n_people: int | None = None) -> Scene:
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    n_people = int(rng.integers(0, 3)) if n_people is None else n_people
    n_shapes = int(rng.integers(1, 6)) if n_shapes is None else n_shapes
    objects: list[Obj] = []
    placed: list[tuple[float, ...]] = []
    for _ in range(n_people):
        person = make_person(rng, placed)
        if person is not None:
            objects.append(person)
            placed.append(person.box)
    for _ in range(n_shapes):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        shape = make_shape(rng, kind, color, placed)
        if shape is not None:
            objects.append(shape)
            placed.append(shape.box)
    if not any(o.kind != "person" for o in objects):
        # Scenes always have at least one shape; retry the placement with a fresh draw.
        return sample_scene(rng, n_shapes, n_people)
    return Scene(background, objects, bool(rng.integers(2)), int(rng.integers(2**31)))


def _coverage(obj: Obj, ss: int) -> np.ndarray:
    """Fraction of each canvas pixel covered by `obj`, estimated with ss x ss samples per pixel."""
    x0, y0, x1, y1 = obj.box
    # Only the object's own window is sampled: everything outside it is exactly 0.
    wx0, wy0 = max(0, int(np.floor(x0)) - 2), max(0, int(np.floor(y0)) - 2)
    wx1, wy1 = min(SIZE, int(np.ceil(x1)) + 2), min(SIZE, int(np.ceil(y1)) + 2)
    if obj.kind == "person":
        wx0, wy0, wx1, wy1 = 0, 0, SIZE, SIZE
        xs_kp = [p[0] for p in obj.keypoints]
        ys_kp = [p[1] for p in obj.keypoints]
        pad = obj.head_radius + obj.limb_width + 2
        wx0, wx1 = max(0, int(min(xs_kp) - pad)), min(SIZE, int(max(xs_kp) + pad) + 1)
        wy0, wy1 = max(0, int(min(ys_kp) - pad)), min(SIZE, int(max(ys_kp) + pad) + 1)
    offs = (np.arange(ss) + 0.5) / ss
    ys, xs = np.meshgrid(
        (np.arange(wy0, wy1)[:, None] + offs[None, :]).reshape(-1),
        (np.arange(wx0, wx1)[:, None] + offs[None, :]).reshape(-1),
        indexing="ij",
    )
    if obj.kind == "person":
        inside = _person_inside(obj, xs, ys)
    elif obj.kind == "square":
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    elif obj.kind == "circle":
        cx, cy, rad = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= rad**2
    elif obj.kind == "triangle":
        cx, h, w = (x0 + x1) / 2, y1 - y0, x1 - x0
        inside = (ys >= y0) & (ys < y1) & (np.abs(xs - cx) <= (ys - y0) / h * w / 2)
    elif obj.kind == "diamond":
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        inside = np.abs(xs - cx) / hw + np.abs(ys - cy) / hh <= 1
    else:
        raise ValueError(obj.kind)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[wy0:wy1, wx0:wx1] = inside.reshape(wy1 - wy0, ss, wx1 - wx0, ss).mean(axis=(1, 3))
    return out


def _segment_distance(xs, ys, a, b):
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(xs - (ax + t * dx), ys - (ay + t * dy))


def _person_inside(obj: Obj, xs, ys):
    kp = dict(zip(KEYPOINTS, obj.keypoints))
    hx, hy = kp["head"]
    inside = (xs - hx) ** 2 + (ys - hy) ** 2 <= obj.head_radius**2
    for a, b in SKELETON:
        if a == "head":
            continue
        inside |= _segment_distance(xs, ys, kp[a], kp[b]) <= obj.limb_width / 2
    return inside


def render(scene: Scene) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns the uint8 [128, 128, 3] image and one boolean mask per object (same order).

    People's boxes are refined here to the tight box of their drawn pixels, as the world requires.
    """
    ss = 4 if scene.antialias else 1
    return compose(scene, lambda obj: _coverage(obj, ss), np.random.default_rng(scene.noise_seed))


def compose(
    scene: Scene, coverage, rng: np.random.Generator, drawn: float = 0.0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A renderer's image from its per-object `coverage` (canvas-sized, in [0, 1]): objects blended
    over the background in order, masks at half coverage, a person's box refined to the pixels it
    covers above `drawn`, then the background noise of the world (+-8 per channel) from `rng`."""
    canvas = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    canvas[:] = BACKGROUNDS[scene.background]
    masks = []
    for obj in scene.objects:
        cov = coverage(obj)
        canvas = canvas * (1 - cov[..., None]) + np.array(obj.rgb, dtype=np.float32) * cov[..., None]
        masks.append(cov >= 0.5)
        if obj.kind == "person":
            ys, xs = np.nonzero(cov > drawn)
            obj.box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    noise = rng.integers(-8, 9, size=canvas.shape)
    image = np.clip(np.rint(canvas) + noise, 0, 255).astype(np.uint8)
    return image, masks


def position_words(obj: Obj) -> str:
    cx, cy = obj.center
    row = ["top", "middle", "bottom"][min(2, int(cy * 3 // SIZE))]
    col = ["left", "center", "right"][min(2, int(cx * 3 // SIZE))]
    if row == "middle" and col == "center":
        return "in the center"
    if row == "middle":
        return f"on the {col}"
    if col == "center":
        return f"at the {row}"
    return f"at the {row} {col}"


def region_of_position(words: str) -> tuple[float, float, float, float]:
    """The third (or ninth) of the canvas a position phrase names, as a box."""
    third = SIZE / 3
    cols = {"left": (0, third), "center": (third, 2 * third), "right": (2 * third, SIZE)}
    rows = {"top": (0, third), "middle": (third, 2 * third), "bottom": (2 * third, SIZE)}
    x, y = (0.0, SIZE), (0.0, SIZE)
    if words == "in the center":
        x, y = cols["center"], rows["middle"]
    for word, span in cols.items():
        if word in words.split() and word != "center":
            x = span
    for word, span in rows.items():
        if word in words.split():
            y = span
    return (x[0], y[0], x[1], y[1])
