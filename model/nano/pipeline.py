"""One command from nothing to a bundle: stage-0 experts (unless pretrained ones are given) ->
tokenizer -> three-stage training -> ONNX export -> golden references -> evaluation and model card.

    /usr/bin/python3 -m model.nano.pipeline [--config full|smoke] [--minutes 90] [--out DIR]
        [--experts model/experts/experts.pt] [--expert-minutes 25] [--instruction-minutes 0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from . import tasks as T
from .model import SMOKE, Config
from .tokenizer import Tokenizer, train_bpe
from .train import full_recipe, plot_history, smoke_recipe, train


def build_tokenizer(path: str, vocab_size: int, samples: int = 6000) -> Tokenizer:
    if os.path.exists(path):
        return Tokenizer.load(path)
    rng = np.random.default_rng(1234)
    names = list(T.FAMILIES)
    texts = []
    for i in range(samples):
        sample = T.FAMILIES[names[i % len(names)]](rng)
        text, _ = T.render_prompt(sample)
        texts.append(text)
    tok = train_bpe(texts, vocab_size)
    tok.save(path)
    return tok


def again_from_last_stage(checkpoint: str, stages: int) -> None:
    """Sets a finished run's checkpoint back to the start of its last stage (stage 4, instructions),
    keeping the weights and the loss history, so that the stage runs once more."""
    saved = torch.load(checkpoint)
    if saved["state"]["stage"] < stages:
        raise SystemExit(f"{checkpoint} has not finished its stages yet: run without --again to resume it")
    saved["state"] = {"stage": stages - 1, "step": 0, "history": saved["state"]["history"], "elapsed": 0.0}
    saved["optimizer"] = None
    torch.save(saved, checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["full", "smoke"], default="full")
    parser.add_argument("--minutes", type=float, default=90.0, help="wall-clock budget for the paper's three stages")
    parser.add_argument(
        "--instruction-minutes",
        type=float,
        default=0.0,
        help="stage 4: instruction tuning beside the language corpus (0: none); resumable on its own",
    )
    parser.add_argument("--out", default="model/.runs/full", help="work folder: checkpoints, logs")
    parser.add_argument("--bundle", default=None, help="where to write the bundle (default: model/bundle for full)")
    parser.add_argument("--eval-scenes", type=int, default=500)
    parser.add_argument(
        "--experts",
        default="model/experts/experts.pt",
        help="pretrained stage-0 experts to start from; trained first (into OUT/experts) if missing",
    )
    parser.add_argument("--expert-minutes", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--again",
        action="store_true",
        help="run stage 4 once more from OUT's finished run (the committed bundle had two passes)",
    )
    args = parser.parse_args()
    # Two intra-op threads with OpenBLAS held to one (set before torch loads: model/nano/__main__ and
    # the npm scripts do): OpenBLAS's own pthreads ignore set_num_threads and oversubscribe the cores.
    torch.set_num_threads(args.threads)
    smoke = args.config == "smoke"
    os.makedirs(args.out, exist_ok=True)
    experts = args.experts
    if smoke or not os.path.exists(experts):
        from .pretrain import train_experts

        experts_dir = os.path.join(args.out, "experts")
        train_experts(
            experts_dir,
            SMOKE if smoke else Config(),
            args.expert_minutes,
            batch_size=4 if smoke else 24,
            max_steps=3 if smoke else 100_000,
        )
        experts = os.path.join(experts_dir, "experts.pt")
    tok = build_tokenizer(os.path.join(args.out, "tokenizer.json"), 320 if smoke else 640, 400 if smoke else 6000)
    base = SMOKE if smoke else Config()
    cfg = Config(**{**base.to_dict(), "vocab_size": tok.size})
    recipe = smoke_recipe() if smoke else full_recipe(args.minutes, args.instruction_minutes)
    if args.again:
        again_from_last_stage(os.path.join(args.out, "checkpoint.pt"), len(recipe.stages))
    started = time.time()
    model = train(args.out, cfg, recipe, tok, experts)
    print(f"training took {(time.time() - started) / 60:.1f} min")
    import json

    with open(os.path.join(args.out, "history.json")) as f:
        history = json.load(f)
    if history:
        plot_history(history, os.path.join(args.out, "loss_curves.png"))
    from .export import export_bundle

    bundle = args.bundle or (os.path.join(args.out, "bundle") if smoke else "model/bundle")
    export_bundle(model, tok, bundle, golden=True, history_plot=os.path.join(args.out, "loss_curves.png"))
    if not smoke and args.eval_scenes > 0:
        from .evaluate import evaluate_and_write_card

        evaluate_and_write_card(model, tok, bundle, args.eval_scenes)


if __name__ == "__main__":
    main()
