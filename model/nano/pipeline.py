"""One command from nothing to a bundle: stage-0 experts (unless pretrained ones are given) ->
tokenizer -> three-stage training -> ONNX export -> golden references -> evaluation and model card.

    /usr/bin/python3 -m model.nano.pipeline [--config full|smoke] [--minutes 90] [--out DIR]
        [--experts model/experts/experts.pt] [--expert-minutes 25] [--instruction-minutes 0]
        [--language-minutes 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np
import torch

from . import tasks as T
from .model import SMOKE, Config
from .tokenizer import Tokenizer, train_bpe
from .train import full_recipe, plot_history, smoke_recipe, train


# Vocabulary sizes (full, smoke): the first merges learnt from the instruction data alone, the rest
# from it and the language corpus, appended (`widen_run` upgrades a run trained with the first part).
VOCAB = {"full": (640, 1024), "smoke": (320, 352)}


def tokenizer_texts(samples: int, corpus: int | None = None) -> tuple[list[str], list[str]]:
    """Rendered training conversations of every family, and passages of the language corpus (two for
    every three conversations unless `corpus` says how many)."""
    from . import language

    rng = np.random.default_rng(1234)
    names = list(T.FAMILIES)
    texts = [T.render_prompt(T.FAMILIES[names[i % len(names)]](rng))[0] for i in range(samples)]
    corpus_rng = np.random.default_rng(5)
    n = samples * 2 // 3 if corpus is None else corpus
    return texts, [language.passage(corpus_rng) for _ in range(n)]


def build_tokenizer(path: str, sizes: tuple[int, int], samples: int = 6000) -> Tokenizer:
    """The run's tokenizer, from `path` if it has one. The first merges come from the instruction
    data; the rest from it and the corpus, so that every word the corpus teaches (held-out verbs
    included) is one token, as words are in the vocabulary of an LLM pretrained on text: read as
    fragments ("t", "ra", "ce"), a word the instructions never used carried nothing over."""
    if os.path.exists(path):
        return Tokenizer.load(path)
    texts, corpus = tokenizer_texts(samples)
    tok = train_bpe(texts, sizes[0])
    tok = train_bpe(texts + corpus, sizes[1], start=tok)
    tok.save(path)
    return tok


def widen_run(out: str, tok: Tokenizer, size: int, samples: int = 6000) -> Tokenizer:
    """Extends an older run's tokenizer to `size` (its ids unchanged, new tokens appended) and its
    checkpoint's token embeddings and output rows with it. A new token starts from its fragments: its
    embedding is their mean, its output row the first fragment's (so the model's first guess for it
    is the one it had for its first fragment)."""
    texts, corpus = tokenizer_texts(samples)
    wide = train_bpe(texts + corpus, size, start=tok)
    checkpoint = os.path.join(out, "checkpoint.pt")
    if os.path.exists(checkpoint):
        saved = torch.load(checkpoint, map_location="cpu")
        weights = saved["model"]
        embed, head = weights["llm.embed_tokens.weight"], weights["llm.lm_head.weight"]
        pieces = [tok.encode(wide.decode([i])) for i in range(tok.size, wide.size)]
        weights["llm.embed_tokens.weight"] = torch.cat([embed, torch.stack([embed[p].mean(0) for p in pieces])])
        weights["llm.lm_head.weight"] = torch.cat([head, torch.stack([head[p[0]] for p in pieces])])
        saved["optimizer"] = None
        torch.save(saved, checkpoint)
    wide.save(os.path.join(out, "tokenizer.json"))
    print(f"vocabulary widened from {tok.size} to {wide.size} tokens")
    return wide


def again_from_last_stage(checkpoint: str, stages: int) -> None:
    """Sets a finished run's checkpoint back to the start of its last stage (stage 4, instructions),
    keeping the weights and the loss history, so that the stage runs once more."""
    saved = torch.load(checkpoint, map_location="cpu")
    if saved["state"]["stage"] < stages:
        raise SystemExit(f"{checkpoint} has not finished its stages yet: run without --again to resume it")
    saved["state"] = {"stage": stages - 1, "step": 0, "history": saved["state"]["history"], "elapsed": 0.0}
    saved["optimizer"] = None
    torch.save(saved, checkpoint)


@contextlib.contextmanager
def training_device(device: str):
    """Tensors made during training land on `device` (the recipe's code makes them with the default
    device); the CPU needs nothing set, so torch 1.13 (Debian's) runs the default unchanged."""
    if device == "cpu":
        yield
        return
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device("cpu")


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
    parser.add_argument(
        "--language-minutes",
        type=float,
        default=0.0,
        help="stage 0-language: the LLM pretrained alone on the language corpus first (0: none)",
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
        "--device",
        default="cpu",
        help="where stages 0-language to 4 train (cuda: a GPU; needs torch 2); export and evaluation run on the CPU",
    )
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
    sizes = VOCAB[args.config]
    tok = build_tokenizer(os.path.join(args.out, "tokenizer.json"), sizes, 400 if smoke else 6000)
    if tok.size < sizes[1]:
        tok = widen_run(args.out, tok, sizes[1], 400 if smoke else 6000)
    base = SMOKE if smoke else Config()
    cfg = Config(**{**base.to_dict(), "vocab_size": tok.size})
    recipe = smoke_recipe() if smoke else full_recipe(args.minutes, args.instruction_minutes, args.language_minutes)
    if args.again:
        again_from_last_stage(os.path.join(args.out, "checkpoint.pt"), len(recipe.stages))
    started = time.time()
    with training_device(args.device):
        model = train(args.out, cfg, recipe, tok, experts)
    model = model.cpu()
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
