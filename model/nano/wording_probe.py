"""Held-out detection or segmentation requests, routed and labelled, grouped by the held-out element
each has: a held-out verb ("trace", "spot") or a training one, and its list form ("a or b", "a as well
as b", a training form, or a single category). Text only (no decoder runs), so it reads a checkpoint
in a minute, mid-training included: where the card's figure says how good, this says which wordings.

    /usr/bin/python3 -m model.nano.wording_probe --run model/.runs/full7 [--family segmentation]
        [--bundle model/bundle] [--requests 120]

The bundle gives the config and tokenizer; the run's checkpoint.pt the weights.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from . import grammar as G
from . import tasks as T

ROUTES = {"detection": "[DET]", "segmentation": "[SEG]"}
VERB_SLOTS = {"detection": "det_verb", "segmentation": "seg_verb"}


def groups_of(request: str, categories: int, family: str) -> list[str]:
    """The groups a request counts in: all, its verb (held-out or training) and its list form."""
    low = f" {request.lower()} "
    held = any(f" {verb} " in low for verb in G.SLOTS[VERB_SLOTS[family]][1])
    if categories == 1:
        form = "single"
    elif " or " in low:
        form = "or"
    elif " as well as " in low:
        form = "as well as"
    else:
        form = "training form"
    return ["all", "verb: " + ("held-out" if held else "training"), "list: " + form]


def probe(runner, family: str, requests: int, seed: int = 31337) -> dict[str, tuple[int, int, int]]:
    """Per group: (requests, routed to the family's decoder, categories named as asked, in order)."""
    want = ROUTES[family]
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    rng = np.random.default_rng(seed)
    for _ in range(requests):
        sample = T.detection(rng, seg=family == "segmentation", split="heldout")
        request = sample.turns[0][0].replace("<image>\n", "")
        asked = [call.phrase for call in sample.calls]
        result = runner.generate(
            [("<image>\n" + request, "")], sample.image, None, max_new_tokens=60, run_decoders=False
        )
        routed = bool(result.groups) and all(g.routing == want for g in result.groups)
        named = [g.label for g in result.groups] == asked
        for group in groups_of(request, len(asked), family):
            counts[group][0] += 1
            counts[group][1] += routed
            counts[group][2] += named
    return {k: (n, r, l) for k, (n, r, l) in counts.items()}


def report(counts: dict[str, tuple[int, int, int]]) -> str:
    lines = [f"{'group':22s} {'requests':>8s} {'routed':>7s} {'labels':>7s}"]
    for group, (n, routed, named) in sorted(counts.items()):
        lines.append(f"{group:22s} {n:8d} {routed / n:7.2f} {named / n:7.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training folder with checkpoint.pt")
    parser.add_argument("--bundle", default="model/bundle", help="for the config and the tokenizer")
    parser.add_argument("--family", choices=sorted(ROUTES), default="segmentation")
    parser.add_argument("--requests", type=int, default=120)
    args = parser.parse_args()
    import torch

    from .evaluate import load_trained
    from .infer import Runner

    torch.set_num_threads(1)
    model, tok = load_trained(args.bundle, args.run)
    print(report(probe(Runner(model, tok), args.family, args.requests)))


if __name__ == "__main__":
    main()
