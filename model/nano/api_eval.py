"""The model card's evaluation, asked through the running stack's public API instead of PyTorch.

    DEFAULT_RPM=100000 DEFAULT_MAX_CONCURRENT=64 npm start   # another terminal: prints the URL and a key
    /usr/bin/python3 -m model.nano.api_eval --url http://127.0.0.1:8787 --key vl_... [--scenes 500]
        [--families questions,detection] [--split heldout] [--parallel 4]

With `--scenes 500` (the card's count) every family asks exactly the card's requests, so the figures
can be set beside the card's one to one; the development key's default limit (120 a minute) would
otherwise pace the run.

Every request goes as a user would send it: the scene as a PNG data URL, the held-out wording as
text, regions as PNG masks, to `POST /v1/chat` (the native event stream). Text deltas, detections
(masks decoded from their run lengths), keypoints and images are read back from the events and
judged by the same code that writes the model card (`evaluate.Evaluator`), on the same seeds.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import other_renderer
from . import world as W
from .evaluate import BARS, Evaluator, evaluate_family

REGION_MARK = "<reg>region1<region></reg>"


def png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decode_rle(mask: dict) -> np.ndarray:
    """The wire's run lengths over row-major pixels, starting with zeros -> bool [h,w]."""
    flat = np.zeros(mask["width"] * mask["height"], dtype=bool)
    offset, value = 0, False
    for run in mask["counts"]:
        if value:
            flat[offset : offset + run] = True
        offset += run
        value = not value
    return flat.reshape(mask["height"], mask["width"])


def content_parts(question: str, image: np.ndarray | None, regions: list[np.ndarray] | None) -> list[dict]:
    """The user turn as content parts: the image, then text with each region mark as a region part."""
    parts: list[dict] = []
    if image is not None:
        parts.append({"type": "image_url", "image_url": {"url": png_data_url(image)}})
    pieces = question.split(REGION_MARK)
    for i, piece in enumerate(pieces):
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
        if i < len(pieces) - 1 and regions:
            mask = regions[min(i, len(regions) - 1)].astype(np.uint8) * 255
            parts.append({"type": "region", "region": {"mask": png_data_url(mask)}})
    return parts


@dataclass
class ApiResult:
    text: str = ""
    detections: list[dict] = field(default_factory=list)
    poses: list[dict] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


def read_events(response) -> list[dict]:
    """Server-sent events -> their JSON payloads, in order."""
    events, data = [], []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                events.append(json.loads("\n".join(data)))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        events.append(json.loads("\n".join(data)))
    return events


def collect(events: list[dict]) -> ApiResult:
    out = ApiResult()
    for e in events:
        if e["type"] == "text-delta":
            out.text += e["delta"]
        elif e["type"] == "detections":
            items = [
                {"score": d["score"], "box": d["box"], **({"mask": decode_rle(d["mask"])} if "mask" in d else {})}
                for d in e["items"]
            ]
            out.detections.append({"label": e["label"], "items": items})
        elif e["type"] == "keypoints":
            out.poses += [
                {"score": p["score"], "box": p["box"], "keypoints": [[k["x"], k["y"]] for k in p["keypoints"]]}
                for p in e["items"]
            ]
        elif e["type"] == "image":
            out.images.append(np.array(Image.open(io.BytesIO(base64.b64decode(e["png_base64"]))).convert("RGB")))
        elif e["type"] == "error":
            raise RuntimeError(f"stream error {e['code']}: {e['message']}")
    return out


class ApiRunner:
    """Runner.generate's signature, answered by the public API (greedy, as the reference runtime)."""

    def __init__(self, url: str, key: str, model: str = "visionllm-v2-nano"):
        self.url = url.rstrip("/") + "/v1/chat"
        self.key = key
        self.model = model

    def generate(
        self, turns, image=None, regions=None, max_new_tokens: int = 200, seed: int = 0, run_decoders: bool = True
    ) -> ApiResult:
        question = turns[-1][0].replace("<image>\n", "")
        body = {
            "model": self.model,
            "temperature": 0,
            "seed": seed,
            "max_tokens": max_new_tokens,
            "messages": [{"role": "user", "content": content_parts(question, image, regions)}],
        }
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "authorization": f"Bearer {self.key}",
                "content-type": "application/json",
                # the model is measured, not the response cache
                "cache-control": "no-cache",
            },
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    return collect(read_events(response))
            except urllib.error.HTTPError as error:
                if error.code not in (429, 503) or attempt == 4:
                    raise RuntimeError(f"{error.code}: {error.read().decode()[:300]}") from error
                time.sleep(float(error.headers.get("retry-after") or 1))
        raise RuntimeError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    parser.add_argument("--key", required=True)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--families", default=",".join(BARS))
    parser.add_argument("--split", choices=["heldout", "train"], default="heldout")
    parser.add_argument("--parallel", type=int, default=4, help="families asked side by side")
    parser.add_argument("--card", default="model/bundle/card/eval.json", help="the card's figures, printed beside")
    parser.add_argument(
        "--renderer",
        choices=["world", "other"],
        default="world",
        help="scenes drawn by world.render or by the second renderer (other_renderer.py, never trained on)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        metavar="RUN_DIR",
        help="also run the PyTorch reference on the same scenes (checkpoint.pt in RUN_DIR, bundle config)",
    )
    args = parser.parse_args()
    if args.renderer == "other":
        W.render = other_renderer.render
    card = {}
    try:
        with open(args.card) as f:
            results = json.load(f)["results"]
        card = results["other_renderer"] if args.renderer == "other" else results[args.split]
    except (OSError, KeyError, json.JSONDecodeError):
        pass
    ev = Evaluator(ApiRunner(args.url, args.key), args.split)  # type: ignore[arg-type]
    reference = Evaluator(reference_runner(args.reference), args.split) if args.reference else None
    print(
        f"{'family':<14} {'api':>6} {'card':>6} {'diff':>6} {'torch':>6}  "
        f"({args.scenes} scenes, {args.split} wordings, {args.url})"
    )

    def one(family: str) -> tuple[str, float, float]:
        started = time.time()
        value, _ = evaluate_family(ev, family, args.scenes, None)
        return family, value, time.time() - started

    # Families run side by side (the runner batches concurrent requests); each keeps its own seeds, so
    # with --scenes equal to the card's, every family asks exactly the card's requests.
    worst = 0.0
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for family, value, seconds in pool.map(one, args.families.split(",")):
            ref = card.get(family, float("nan"))
            same = evaluate_family(reference, family, args.scenes, None)[0] if reference else float("nan")
            worst = max(worst, abs(value - ref) if ref == ref else 0.0)
            print(
                f"{family:<14} {value:6.3f} {ref:6.3f} {abs(value - ref):6.3f} {same:6.3f}  ({seconds:.0f} s)",
                flush=True,
            )
    print(f"largest difference from the card: {worst:.3f}")


def reference_runner(run_dir: str, bundle: str = "model/bundle"):
    """The PyTorch reference runtime on the bundle's checkpoint, to compare on the very same scenes."""
    from .evaluate import load_trained
    from .infer import Runner

    return Runner(*load_trained(bundle, run_dir))


if __name__ == "__main__":
    main()
