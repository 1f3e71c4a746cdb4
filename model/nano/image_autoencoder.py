"""The image expert's first part (Stable Diffusion's autoencoder role): 128 x 128 pixels <-> a
latent grid, trained standalone on the world generator, resumable across sessions.

    /usr/bin/python3 -m model.nano.image_autoencoder [--minutes 20] [--out model/.runs/image-ae]
        [--latent 32] [--channels 8] [--device cpu|cuda]

Its measure is the one the generation bar uses: the pixel analyser of evaluate.py (colours, kinds
and centres of blobs) must find exactly the scene's objects in the reconstruction. A latent that
cannot keep a 16-pixel diamond's corners caps every generator built on it, so this number comes
first. The loss weighs pixels at object edges more: they are few and they decide the kind.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import world as W
from .evaluate import parse_scene


class Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(8, cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, 1, 1),
            nn.GroupNorm(8, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, 1, 1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.skip(x)


class ImageAutoencoder(nn.Module):
    """[B,3,128,128] in [-1,1] <-> [B,channels,latent,latent]; downsampling by strided convolutions."""

    def __init__(self, latent: int = 32, channels: int = 8, width: int = 64):
        super().__init__()
        downs = int(np.log2(W.SIZE // latent))
        enc: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1)]
        dec: list[nn.Module] = [nn.Conv2d(channels, width * 2, 3, 1, 1)]
        for i in range(downs):
            cin, cout = (width, width * 2) if i == 0 else (width * 2, width * 2)
            enc += [Block(cin, cout), nn.Conv2d(cout, cout, 4, 2, 1)]
            dec += [
                Block(width * 2, width * 2),
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width * 2, width * 2, 3, 1, 1),
            ]
        enc += [Block(width * 2, width * 2), nn.GroupNorm(8, width * 2), nn.SiLU(), nn.Conv2d(width * 2, channels, 1)]
        dec += [Block(width * 2, width), nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, 3, 3, 1, 1)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_pixels(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def scenes(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[W.Scene]]:
    drawn = [W.sample_scene(rng) for _ in range(n)]
    return [W.render(s)[0] for s in drawn], drawn


def edge_weight(x: torch.Tensor, edge: float = 8.0) -> torch.Tensor:
    """1 everywhere, `edge` where the image changes colour (object outlines and corners)."""
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().sum(1, keepdim=True)
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().sum(1, keepdim=True)
    g = F.pad(gx, (0, 1, 0, 0)) + F.pad(gy, (0, 0, 0, 1))
    return 1 + (edge - 1) * (F.max_pool2d(g, 3, 1, 1) > 0.6).float()


def loss_of(model: ImageAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return ((model(x) - x).abs() * edge_weight(x)).mean()


def same_objects(original: W.Scene, image: np.ndarray) -> bool:
    """The analyser reads exactly the scene's shapes (colour and kind) from the image."""
    _, found = parse_scene(image)
    want = sorted((o.color, o.kind) for o in original.objects if o.kind != "person")
    got = sorted((o["color"], o["kind"]) for o in found if o["color"] is not None)
    return want == got


@torch.no_grad()
def evaluate(model: ImageAutoencoder, n: int = 200, seed: int = 77, device: str = "cpu") -> dict:
    """Held-out scenes: mean absolute error (0-255) and the share the analyser reads exactly, beside
    the share it reads exactly from the originals (its own ceiling)."""
    model.eval()
    images, drawn = scenes(np.random.default_rng(seed), n)
    recon = to_pixels(torch.cat([model(to_tensor(images[i : i + 32]).to(device)) for i in range(0, n, 32)]))
    mae = float(np.mean([np.abs(r.astype(np.int16) - o.astype(np.int16)).mean() for r, o in zip(recon, images)]))
    exact = float(np.mean([same_objects(s, r) for s, r in zip(drawn, recon)]))
    ceiling = float(np.mean([same_objects(s, o) for s, o in zip(drawn, images)]))
    model.train()
    return {
        "mae": round(mae, 2),
        "exact_objects": round(exact, 3),
        "analyser_on_originals": round(ceiling, 3),
        "scenes": n,
    }


def train(
    out: str,
    minutes: float,
    latent: int,
    channels: int,
    batch: int = 16,
    lr: float = 1e-3,
    device: str = "cpu",
    max_steps: int = 10**9,
    width: int = 64,
    eval_scenes: int = 200,
    log=print,
) -> tuple[ImageAutoencoder, dict]:
    """Trains for `minutes` more (resuming OUT/autoencoder.pt), then measures; returns the figures."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "autoencoder.pt")
    model = ImageAutoencoder(latent, channels, width).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    state = {"step": 0, "seconds": 0.0}
    if os.path.exists(path):
        saved = torch.load(path, map_location=device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log(f"resuming at step {state['step']} ({state['seconds'] / 60:.1f} min so far)")
    rng = np.random.default_rng(state["step"] + 1)
    started = time.time()
    steps = 0
    while time.time() - started < minutes * 60 and steps < max_steps:
        images, _ = scenes(rng, batch)
        loss = loss_of(model, to_tensor(images).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        state["step"] += 1
        if state["step"] % 100 == 0:
            log(f"step {state['step']}: loss {float(loss):.4f}")
    state["seconds"] += time.time() - started
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": state,
            "config": {"latent": latent, "channels": channels, "width": width},
        },
        path,
    )
    figures = {
        **evaluate(model, n=eval_scenes, device=device),
        "steps": state["step"],
        "minutes": round(state["seconds"] / 60, 1),
        "latent": [channels, latent, latent],
    }
    with open(os.path.join(out, "autoencoder.json"), "w") as f:
        json.dump(figures, f, indent=1)
    return model, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="model/.runs/image-ae")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, figures = train(args.out, args.minutes, args.latent, args.channels, device=args.device)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
