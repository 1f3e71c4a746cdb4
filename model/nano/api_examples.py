"""The requests a new user tried in the model issue, asked again through the running stack's public API
on fresh scenes, each answer checked for what the user expected:

    /usr/bin/python3 -m model.nano.api_examples --key vl_... [--url http://127.0.0.1:8787] [--scenes 20]

- "Find every person and every shape in this image.": groups labelled person then shape, every person
  and every shape boxed (IoU >= 0.5) by its own group;
- "Detect every circle and square.": groups labelled circle then square, each box over 0.5 on an object
  of its own kind, every circle and square found;
- a pose request in a sentence frame training never saw: the answer ends after the 11 keypoints, one
  pose per person;
- "Where is <expression>?": the group's label is the expression, its box on the object;
- every answer: no leading space, boxes and keypoints inside the image.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import tasks as T
from . import world as W
from .api_eval import ApiRunner
from .evaluate import box_iou

KEYPOINT_NAMES = [k.replace("_", " ") for k in W.KEYPOINTS]


def scene_with_everything(rng: np.random.Generator):
    """A scene holding a person, a circle and a square (so every example has something to find)."""
    while True:
        scene, image, masks = T.new_scene(rng, n_people=1, n_shapes=int(rng.integers(3, 6)))
        kinds = {o.kind for o in scene.objects}
        if {"person", "circle", "square"} <= kinds:
            return scene, image


def inside(box, size: int = W.SIZE) -> bool:
    return all(0 <= v <= size for v in box)


def found_all(groups, scene, category: str, label: str) -> bool:
    group = next((g for g in groups if g["label"] == label), None)
    if group is None:
        return False
    boxes = [d["box"] for d in group["items"] if d["score"] >= 0.5]
    return all(any(box_iou(b, scene.objects[i].box) >= 0.5 for b in boxes) for i in T.category_members(scene, category))


def only_own_kind(groups, scene, label: str) -> bool:
    group = next((g for g in groups if g["label"] == label), None)
    if group is None:
        return False
    own = [scene.objects[i].box for i in T.category_members(scene, label)]
    return all(any(box_iou(d["box"], b) >= 0.5 for b in own) for d in group["items"] if d["score"] >= 0.5)


def check_people_and_shapes(ask, scene, image) -> dict[str, bool]:
    r = ask("Find every person and every shape in this image.", image)
    labels = [g["label"] for g in r.detections]
    return {
        "person/shape: named as asked": labels == ["person", "shape"],
        "person/shape: every one boxed": found_all(r.detections, scene, "person", "person")
        and found_all(r.detections, scene, "shape", "shape"),
        "no leading space": not r.text.startswith(" "),
        "boxes inside the image": all(inside(d["box"]) for g in r.detections for d in g["items"]),
    }


def check_circles_and_squares(ask, scene, image) -> dict[str, bool]:
    r = ask("Detect every circle and square.", image)
    labels = [g["label"] for g in r.detections]
    return {
        "circle/square: named as asked": labels == ["circle", "square"],
        "circle/square: boxes on their own kind": only_own_kind(r.detections, scene, "circle")
        and only_own_kind(r.detections, scene, "square"),
        "circle/square: every one found": found_all(r.detections, scene, "circle", "circle")
        and found_all(r.detections, scene, "square", "square"),
    }


def check_pose(ask, scene, image) -> dict[str, bool]:
    r = ask("Could you work out the posture of every person in this picture?", image)
    tail = r.text.rstrip(". ").split(",")[-1].strip()
    named = sum(r.text.count(name) for name in KEYPOINT_NAMES if " " not in name)
    return {
        "pose: ends after the 11 keypoints": tail.endswith("right foot") and named <= len(KEYPOINT_NAMES),
        "pose: one per person": len(r.poses) == len(scene.people()),
        "keypoints inside the image": all(0 <= v <= W.SIZE for p in r.poses for kp in p["keypoints"] for v in kp),
    }


def check_grounding(ask, rng, scene, image) -> dict[str, bool]:
    exprs = T.referring_expressions(scene)
    expression, target = exprs[int(rng.integers(len(exprs)))]
    r = ask(f"Where is {expression}?", image)
    group = r.detections[0] if r.detections else {"label": "", "items": []}
    box = group["items"][0]["box"] if group["items"] else None
    return {
        "grounding: label is the expression": group["label"] == expression,
        "grounding: box on the object": box is not None and box_iou(box, scene.objects[target].box) >= 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    parser.add_argument("--key", required=True)
    parser.add_argument("--scenes", type=int, default=20)
    args = parser.parse_args()
    runner = ApiRunner(args.url, args.key)

    def ask(question: str, image):
        return runner.generate([("<image>\n" + question, "")], image, None, max_new_tokens=160)

    rng = np.random.default_rng(4242)
    tally: dict[str, list[bool]] = {}
    for _ in range(args.scenes):
        scene, image = scene_with_everything(rng)
        for checks in (
            check_people_and_shapes(ask, scene, image),
            check_circles_and_squares(ask, scene, image),
            check_pose(ask, scene, image),
            check_grounding(ask, rng, scene, image),
        ):
            for name, ok in checks.items():
                tally.setdefault(name, []).append(ok)
    print(f"{'check':<42} {'passed':>8}  ({args.scenes} fresh scenes through {args.url})")
    for name, oks in tally.items():
        print(f"{name:<42} {sum(oks):>3} / {len(oks):<3}")


if __name__ == "__main__":
    main()
