"""Bundle export: one ONNX graph per role, tables as raw tensors, tokenizer, manifest, golden references.

Bundle layout (the contract the runtime's manifest schema checks, shared/src/manifest.ts):
  manifest.json, tokenizer.json, graphs/*.onnx, tables/*.bin (float32 little-endian),
  golden/golden.json (+ golden/*.bin, *.png): PyTorch outputs the TypeScript stack must reproduce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image

from . import batching as B
from . import contract as C
from . import world as W
from .infer import Runner, initial_noise, sample_image
from .model import IMAGE_MEAN, IMAGE_STD, SMOKE, Config, VisionLLMv2Nano
from .tokenizer import SPECIAL_TOKENS, Tokenizer

OPSET = 14

# Graphs whose weights are stored as float16 (Cast to float32 inside the graph): the generator, the
# editor and their links are placeholders until the image experts replace them (generation and editing
# score 0), and storing them at half size keeps the bundle under 40 MB now that the vision and region
# graphs carry the experts' trunk. The two LLM graphs store only their output rows (vocabulary x width)
# at half size, which keeps the 1,024-token vocabulary within the same 40 MB. Weights are rounded to
# float16 in PyTorch first (`round_for_export`, also done by the evaluation), so the golden references,
# the model card and the graphs compute with the same numbers.
HALF_STORED = ("generator", "editor", "superlink_generation", "superlink_editing")
HALF_STORED_OUTPUT_ROWS = ("llm", "llm_decode")


def half_stored_modules(model: VisionLLMv2Nano) -> list[torch.nn.Module]:
    return [model.generator, model.editor, model.generation_link, model.editing_link, model.llm.lm_head]


def round_for_export(model: VisionLLMv2Nano) -> None:
    for module in half_stored_modules(model):
        for p in module.parameters():
            p.data = p.data.half().float()


def store_half(path: str, only_shape: tuple[int, int] | None = None) -> None:
    """Float initializers -> float16 initializers and a Cast back to float32 before first use: all of
    them, or with `only_shape` only a matrix of that shape either way round (the output rows)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < 64:
            continue
        if only_shape is not None and sorted(init.dims) != sorted(only_shape):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}_f16"))
        casts.append(helper.make_node("Cast", [f"{name}_f16"], [name], to=onnx.TensorProto.FLOAT, name=f"{name}_cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, path)


class LLMExport(torch.nn.Module):
    def __init__(self, llm, layers: int):
        super().__init__()
        self.llm = llm
        self.layers = layers

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        logits, hidden, present = self.llm(inputs_embeds, attention_mask, position_ids, list(past))
        return (logits, hidden, *present)


class LLMDecodeExport(torch.nn.Module):
    def __init__(self, llm):
        super().__init__()
        self.llm = llm

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        logits, hidden, new = self.llm.decode_step(inputs_embeds, attention_mask, position_ids, list(past))
        return (logits, hidden, *new)


class Call(torch.nn.Module):
    """Wraps a module whose forward already has the graph's signature."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def link_graph(link: torch.nn.Module, example: torch.Tensor, axis: str, output: str = "class_embeddings") -> tuple:
    """A super-link projection's graph: query states [G, N, D] in, one row per group out."""
    return (Call(link), (example,), ["query_states"], [output], {"query_states": {0: axis}, output: {0: axis}})


def graph_specs(model: VisionLLMv2Nano) -> dict:
    c = model.c
    d, hd, h = c.llm_dim, c.llm_dim // c.llm_heads, c.llm_heads
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    pixels = rnd(1, 3, c.image_size, c.image_size).clamp(-1, 1)
    levels = rnd(1, 3, c.grid * c.grid, c.vit_dim)
    past_names = [f"past_key_values.{i}.{kv}" for i in range(c.llm_layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(c.llm_layers) for kv in ("key", "value")]
    past = [rnd(1, h, 3, hd) for _ in past_names]
    dyn_past = {n: {0: "batch", 2: "past_sequence"} for n in past_names}
    dyn_present = {n: {0: "batch", 2: "total_sequence"} for n in present_names}
    # The decode step's reference: three rows whose caches are filled to different lengths (the
    # slots past a row's length hold garbage that the mask must hide).
    new_names = [f"new_key_values.{i}.{kv}" for i in range(c.llm_layers) for kv in ("key", "value")]
    slot_lengths = torch.tensor([8, 5, 2])
    slot_mask = (torch.arange(8)[None] < slot_lengths[:, None]).long()
    slot_past = [rnd(3, h, 8, hd) for _ in past_names]
    region_mask = torch.zeros(1, 1, c.image_size, c.image_size)
    region_mask[..., 40:70, 30:60] = 1
    return {
        "vision_encoder": (
            Call(model.vision),
            (pixels,),
            ["pixel_values"],
            ["image_features", "vision_levels"],
            {"pixel_values": {0: "batch"}, "image_features": {0: "batch"}, "vision_levels": {0: "batch"}},
        ),
        "projector": (
            Call(model.projector),
            (rnd(1, c.grid * c.grid, c.expert_width),),
            ["image_features"],
            ["image_embeds"],
            {"image_features": {0: "batch"}, "image_embeds": {0: "batch"}},
        ),
        "region_encoder": (
            Call(model.region),
            (pixels, region_mask, levels),
            ["pixel_values", "region_mask", "vision_levels"],
            ["region_embeds"],
            {k: {0: "batch"} for k in ["pixel_values", "region_mask", "vision_levels", "region_embeds"]},
        ),
        "llm": (
            LLMExport(model.llm, c.llm_layers),
            (rnd(1, 5, d), torch.ones(1, 8, dtype=torch.long), torch.arange(3, 8)[None], *past),
            ["inputs_embeds", "attention_mask", "position_ids", *past_names],
            ["logits", "last_hidden_state", *present_names],
            {
                "inputs_embeds": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "total_sequence"},
                "position_ids": {0: "batch", 1: "sequence"},
                "logits": {0: "batch", 1: "sequence"},
                "last_hidden_state": {0: "batch", 1: "sequence"},
                **dyn_past,
                **dyn_present,
            },
        ),
        "llm_decode": (
            LLMDecodeExport(model.llm),
            (rnd(3, 1, d), slot_mask, slot_lengths[:, None], *slot_past),
            ["inputs_embeds", "attention_mask", "position_ids", *past_names],
            ["logits", "last_hidden_state", *new_names],
            {
                "inputs_embeds": {0: "batch"},
                "attention_mask": {0: "batch", 1: "cache"},
                "position_ids": {0: "batch"},
                "logits": {0: "batch"},
                "last_hidden_state": {0: "batch"},
                **{n: {0: "batch", 2: "cache"} for n in past_names},
                **{n: {0: "batch"} for n in new_names},
            },
        ),
        "superlink_perception": link_graph(model.perception_link, rnd(2, c.perception_queries, d), "groups"),
        "superlink_pose": link_graph(model.pose_link, rnd(2, c.perception_queries, d), "groups"),
        "superlink_generation": link_graph(model.generation_link, rnd(1, c.gen_queries, d), "batch", "conditioning"),
        "superlink_editing": link_graph(model.editing_link, rnd(1, c.gen_queries, d), "batch", "conditioning"),
        "perception_decoder": (
            Call(model.perception_decoder),
            (pixels, levels, rnd(1, c.link_dim)),
            ["pixel_values", "vision_levels", "class_embedding"],
            ["pred_logits", "pred_boxes", "pred_masks"],
            {
                k: {0: "batch"}
                for k in ["pixel_values", "vision_levels", "class_embedding", "pred_logits", "pred_boxes", "pred_masks"]
            },
        ),
        "pose_decoder": (
            Call(model.pose_decoder),
            (pixels, levels, rnd(1, c.link_dim), rnd(1, c.num_keypoints, c.link_dim)),
            ["pixel_values", "vision_levels", "person_embedding", "keypoint_embeddings"],
            ["pred_logits", "pred_boxes", "pred_keypoints", "keypoint_scores"],
            {
                k: {0: "batch"}
                for k in [
                    "pixel_values",
                    "vision_levels",
                    "person_embedding",
                    "keypoint_embeddings",
                    "pred_logits",
                    "pred_boxes",
                    "pred_keypoints",
                    "keypoint_scores",
                ]
            },
        ),
        "generator": (
            Call(model.generator),
            (rnd(1, 3, c.gen_res, c.gen_res), torch.tensor([0.3]), rnd(1, c.gen_queries, c.gen_dim)),
            ["sample", "timestep", "conditioning"],
            ["velocity"],
            {k: {0: "batch"} for k in ["sample", "timestep", "conditioning", "velocity"]},
        ),
        "editor": (
            Call(model.editor),
            (
                rnd(1, 3, c.gen_res, c.gen_res),
                torch.tensor([0.3]),
                rnd(1, c.gen_queries, c.gen_dim),
                rnd(1, 3, c.gen_res, c.gen_res),
            ),
            ["sample", "timestep", "conditioning", "source_image"],
            ["velocity"],
            {k: {0: "batch"} for k in ["sample", "timestep", "conditioning", "source_image", "velocity"]},
        ),
    }


def check_decode_step(llm, args) -> None:
    """The serving decode step must compute what the plain forward computes for each row alone."""
    embeds, mask, positions, *past = args
    logits, _, new = llm.decode_step(embeds, mask, positions, past)
    for row in range(embeds.shape[0]):
        n = int(mask[row].sum())
        ref_logits, _, present = llm(
            embeds[row : row + 1],
            torch.ones(1, n + 1, dtype=torch.long),
            positions[row : row + 1],
            [t[row : row + 1, :, :n] for t in past],
        )
        assert (logits[row] - ref_logits[0]).abs().max() < 1e-4, "decode step differs from the forward pass"
        assert (new[0][row] - present[0][0, :, n:]).abs().max() < 1e-5, "decode step's new key differs"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_tensor(path: str, t: torch.Tensor | np.ndarray) -> dict:
    arr = (t.detach().numpy() if isinstance(t, torch.Tensor) else t).astype(np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr.astype("<f4").tofile(path)
    return {"shape": list(arr.shape), "dtype": "float32"}


def png_b64(image: np.ndarray) -> str:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def golden_dir_of(bundle: str) -> str:
    """Golden references sit beside the bundle (model/bundle -> model/golden): they are test data
    for the runtime, not part of what a deployment loads, and stay out of the bundle's size."""
    return os.path.join(os.path.dirname(os.path.abspath(bundle)), "golden")


def export_bundle(
    model: VisionLLMv2Nano, tok: Tokenizer, out: str, golden: bool = True, history_plot: str | None = None
) -> None:
    model.eval()
    # The tracer refuses weights that require grad when a graph reads them without owning them (the
    # experts' trunk inside the vision and region graphs), and no export needs gradients.
    model.requires_grad_(False)
    round_for_export(model)
    c = model.c
    gold = golden_dir_of(out)
    if os.path.exists(out):
        for sub in ("graphs", "tables", "golden"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    if golden:
        shutil.rmtree(gold, ignore_errors=True)
    os.makedirs(os.path.join(out, "graphs"), exist_ok=True)
    graphs = {}
    graph_checks = {}
    with torch.no_grad():
        for name, (module, args, inputs, outputs, dynamic) in graph_specs(model).items():
            path = os.path.join(out, "graphs", f"{name}.onnx")
            # nn.MultiheadAttention's eval fast path has no ONNX symbolic; train mode takes the
            # composite path, and the model has no dropout or batch norm, so the graph is the same.
            module.train()
            torch.onnx.export(
                module,
                args,
                path,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.PRESERVE,
            )
            module.eval()
            if name in HALF_STORED:
                store_half(path)
            if name in HALF_STORED_OUTPUT_ROWS:
                store_half(path, only_shape=(c.vocab_size, c.llm_dim))
            graphs[name] = {"file": f"graphs/{name}.onnx", "inputs": inputs, "outputs": outputs}
            if name == "llm_decode":
                check_decode_step(model.llm, args)
            if golden:
                results = module(*args)
                results = results if isinstance(results, tuple) else (results,)
                check = {"inputs": {}, "outputs": {}}
                for n, t in zip(inputs, args):
                    fname = f"graphs/{name}/{n}.bin"
                    meta = write_tensor(os.path.join(gold, fname), t) if t.dtype != torch.long else None
                    if t.dtype == torch.long:
                        os.makedirs(os.path.dirname(os.path.join(gold, fname)), exist_ok=True)
                        t.numpy().astype("<i8").tofile(os.path.join(gold, fname))
                        meta = {"shape": list(t.shape), "dtype": "int64"}
                    check["inputs"][n] = {"file": fname, **meta}
                for n, t in zip(outputs, results):
                    fname = f"graphs/{name}/{n}.bin"
                    check["outputs"][n] = {"file": fname, **write_tensor(os.path.join(gold, fname), t)}
                graph_checks[name] = check
    tables = {}
    for name, tensor in {
        "embed_tokens": model.llm.embed_tokens.weight,
        "perception_queries": model.perception_queries,
        "pose_queries": model.pose_queries,
        "generation_queries": model.generation_queries,
        "editing_queries": model.editing_queries,
    }.items():
        tables[name] = {
            "file": f"tables/{name}.bin",
            **write_tensor(os.path.join(out, "tables", f"{name}.bin"), tensor),
        }
    tok.save(os.path.join(out, "tokenizer.json"))
    if golden:
        write_golden(model, tok, gold, graph_checks)
    manifest = {
        "format": "visionllm-bundle",
        "format_version": 1,
        "model": {
            "id": "visionllm-v2-nano",
            "version": "1.0.0",
            "architecture": "visionllm-v2",
            "description": "VisionLLM v2-nano, trained on the nano world (NANO_WORLD.md v1)",
        },
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.to_dict().items()},
        "preprocessing": {
            "image_size": c.image_size,
            "resize": "bilinear",
            "mean": list(IMAGE_MEAN),
            "std": list(IMAGE_STD),
            "channel_order": "rgb",
            "layout": "nchw",
        },
        "tokenizer": {"file": "tokenizer.json", "eos_token": "</s>", "pad_token": "<pad>"},
        "chat_template": C.CHAT_TEMPLATE,
        "system_prompt": C.SYSTEM_PROMPT,
        "special_tokens": {
            "image": "<image>",
            "image_start": "<im_start>",
            "image_patch": "<im_patch>",
            "image_end": "<im_end>",
            "region": "<region>",
            "region_start": "<reg>",
            "region_end": "</reg>",
        },
        "image_tokens": c.image_tokens,
        "query_tokens": [t for t in SPECIAL_TOKENS if t.startswith("[EMB")],
        "routing": C.ROUTING,
        "keypoints": {
            "names": W.KEYPOINTS,
            "skeleton": [[W.KEYPOINTS.index(a), W.KEYPOINTS.index(b)] for a, b in W.SKELETON],
        },
        "postprocess": C.POSTPROCESS,
        "answer_format": C.ANSWER_FORMAT,
        "generation": {"resolution": c.gen_res, "steps": 20, "output_size": 128, "noise": "mulberry32-box-muller"},
        "limits": {"max_context": c.max_positions, "max_images": 1, "max_regions": 4, "max_new_tokens": 512},
        "tasks": [
            "chat",
            "vqa",
            "caption",
            "region",
            "detection",
            "segmentation",
            "grounding",
            "pose",
            "generation",
            "editing",
        ],
        "graphs": graphs,
        "tables": tables,
    }
    files = {}
    for root, _, names in os.walk(out):
        for n in sorted(names):
            full = os.path.join(root, n)
            rel = os.path.relpath(full, out)
            if rel in ("manifest.json", "MODEL_CARD.md") or rel.startswith("card/"):
                continue
            files[rel] = {"sha256": sha256(full), "bytes": os.path.getsize(full)}
    manifest["files"] = dict(sorted(files.items()))
    C.validate_manifest(manifest)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    if history_plot and os.path.exists(history_plot):
        os.makedirs(os.path.join(out, "card"), exist_ok=True)
        shutil.copy(history_plot, os.path.join(out, "card", "loss_curves.png"))
    total = sum(v["bytes"] for v in files.values())
    print(
        f"bundle written to {out}: {len(files)} files, {total / 1e6:.1f} MB"
        + (f"; golden references in {gold}" if golden else "")
    )


GOLDEN_CASES = [
    {"name": "detection", "question": "Detect every circle and person.", "scene_seed": 11},
    {"name": "segmentation", "question": "Segment the red objects.", "scene_seed": 12},
    {"name": "grounding", "question": "Where is the biggest shape?", "scene_seed": 13},
    {"name": "pose", "question": "Estimate the pose of each person.", "scene_seed": 14, "people": 1},
    {"name": "question", "question": "How many shapes are there?", "scene_seed": 15},
    {"name": "region", "question": "What is in <reg>region1<region></reg>?", "scene_seed": 16, "region_of": 0},
    {"name": "chat", "question": "What can you do?"},
    {"name": "generation", "question": "Draw a red circle on the left and a blue square on the right.", "seed": 7},
    {"name": "editing", "question": "Make the background beige.", "scene_seed": 17, "seed": 9},
]


def pack_mask(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(np.uint8).reshape(-1)).tobytes()).decode()


def write_golden(model: VisionLLMv2Nano, tok: Tokenizer, out: str, graph_checks: dict) -> None:
    runner = Runner(model, tok)
    cases = []
    for case in GOLDEN_CASES:
        image = None
        regions = []
        if "scene_seed" in case:
            rng = np.random.default_rng(case["scene_seed"])
            scene = W.sample_scene(rng, n_people=case.get("people"))
            image, masks = W.render(scene)
            if "region_of" in case:
                regions = [masks[case["region_of"]]]
        turns = [(("<image>\n" if image is not None else "") + case["question"], "")]
        ids, _ = B.encode_turns(tok, model.c, turns, with_last_answer=False)
        seed = case.get("seed", 0)
        result = runner.generate(turns, image, regions, max_new_tokens=160, seed=seed)
        entry = {
            "name": case["name"],
            "question": case["question"],
            "prompt_ids": ids,
            "first_logits": [round(float(v), 6) for v in result.first_logits.tolist()],
            "generated_ids": result.token_ids,
            "text": result.text,
            "groups": [{"routing": g.routing, "label": g.label} for g in result.groups],
            "detections": [
                {
                    "routing": d["routing"],
                    "label": d["label"],
                    "items": [
                        {"score": it["score"], "box": it["box"], "mask": pack_mask(it["mask"])} for it in d["items"]
                    ],
                }
                for d in result.detections
            ],
            "poses": result.poses,
            "seed": seed,
        }
        if image is not None:
            entry["image_png"] = png_b64(image)
        if regions:
            entry["region_masks_png"] = [png_b64((regions[0] * 255).astype(np.uint8))]
        if result.images:
            entry["output_images_png"] = [png_b64(im) for im in result.images]
            entry["initial_noise"] = initial_noise(seed, model.c.gen_res).flatten()[:8].tolist()
        cases.append(entry)
    # The samplers on fixed super-link states: checks the runtime's Euler loop and image finishing
    # on any bundle, whether or not its LLM chooses to emit [GEN] / [EDIT].
    image_checks = []
    g = torch.Generator().manual_seed(5)
    rng = np.random.default_rng(21)
    scene = W.sample_scene(rng, n_people=0)
    source, _ = W.render(scene)
    with torch.no_grad():
        for task in ("generation", "editing"):
            states = torch.randn(1, model.c.gen_queries, model.c.llm_dim, generator=g)
            edit = task == "editing"
            cond = (model.editing_link if edit else model.generation_link)(states)
            low = B.downsample_image(source, model.c.gen_res)[None] if edit else None
            image = sample_image(
                model.editor if edit else model.generator, cond, model.c.gen_res, 3, low, source if edit else None
            )
            image_checks.append(
                {
                    "task": task,
                    "seed": 3,
                    "query_states": states.flatten().tolist(),
                    "source_png": png_b64(source) if edit else None,
                    "output_png": png_b64(image),
                }
            )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(
            {
                "cases": cases,
                "graphs": graph_checks,
                "image_checks": image_checks,
                "tolerance": {"graph_abs": 1e-4, "logits_abs": 1e-3},
            },
            f,
        )


def main() -> None:
    """Re-exports a bundle from a training checkpoint (after a change to the export, not the model):

    /usr/bin/python3 -m model.nano.export --out model/.runs/full --bundle model/bundle

    The model card and its images are kept; graphs, tables, goldens and the manifest are rewritten.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", default="model/.runs/full", help="training folder with checkpoint.pt and tokenizer.json"
    )
    parser.add_argument("--bundle", default="model/bundle")
    parser.add_argument("--config", choices=["full", "smoke"], default="full")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tok = Tokenizer.load(os.path.join(args.out, "tokenizer.json"))
    base = SMOKE if args.config == "smoke" else Config()
    model = VisionLLMv2Nano(Config(**{**base.to_dict(), "vocab_size": tok.size}))
    model.load_state_dict(torch.load(os.path.join(args.out, "checkpoint.pt"))["model"])
    export_bundle(model, tok, args.bundle, golden=True)


if __name__ == "__main__":
    main()
