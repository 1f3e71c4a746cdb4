"""VisionLLM v2-nano: every part of the full model, shrunk (docs/MODEL.md).

Each nn.Module below is exported as one ONNX graph (export.py); the wiring between them (splicing
image, region and super-link query embeddings into the LLM sequence) is done by the caller, exactly
as the TypeScript runtime does it. Shapes are commented as [batch, ...].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    image_size: int = 128
    patch: int = 8
    vit_dim: int = 128
    vit_layers: int = 3
    vit_heads: int = 4
    llm_dim: int = 192
    llm_layers: int = 4
    llm_heads: int = 6
    llm_ffn: int = 512
    vocab_size: int = 800
    rope_theta: float = 10000.0
    max_positions: int = 1024
    perception_queries: int = 4
    gen_queries: int = 16
    link_dim: int = 256
    expert_width: int = 96  # channels of the perception and pose experts (experts.py)
    num_keypoints: int = 11
    gen_res: int = 32
    gen_dim: int = 128
    # Smaller than before the experts joined (32, 64, 128): the bundle must stay under 40 MB, and the
    # 32 px generator is a placeholder until the image experts replace it.
    gen_channels: tuple[int, int, int] = (24, 48, 96)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def image_tokens(self) -> int:
        return (self.grid // 2) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


SMOKE = Config(
    vit_dim=32,
    vit_layers=3,
    vit_heads=2,
    llm_dim=64,
    llm_layers=2,
    llm_heads=2,
    llm_ffn=128,
    link_dim=64,
    expert_width=32,
    gen_dim=32,
    gen_channels=(8, 16, 32),
)


class Block(nn.Module):
    """Pre-norm transformer block (ViT, decoders, mapper); optional cross-attention."""

    def __init__(self, dim: int, heads: int, cross: bool = False, ffn: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross = cross
        if cross:
            self.norm_c = nn.LayerNorm(dim)
            self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn or dim * 2), nn.GELU(), nn.Linear(ffn or dim * 2, dim))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.norm1(x)
        q = h if pos is None else h + pos
        x = x + self.attn(q, q, h, need_weights=False)[0]
        if self.cross and memory is not None:
            h = self.norm_c(x)
            x = x + self.cross_attn(h if pos is None else h + pos, memory, memory, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


# ---------------------------------------------------------------- encoders


class VisionEncoder(nn.Module):
    """ViT. pixel_values [B,3,H,W] -> image_features [B,P,Dv] (second-to-last layer, CLIP-style),
    vision_levels [B,3,P,Dv] (the last three layers, for the region encoder and the decoders)."""

    def __init__(self, c: Config):
        super().__init__()
        self.patch = nn.Conv2d(3, c.vit_dim, c.patch, c.patch)
        self.pos = nn.Parameter(torch.randn(1, c.grid * c.grid, c.vit_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(c.vit_dim, c.vit_heads) for _ in range(c.vit_layers))
        self.norm = nn.LayerNorm(c.vit_dim)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.pos
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        levels = torch.stack([outs[-3], outs[-2], self.norm(outs[-1])], dim=1)
        return outs[-2], levels


class VisionTower(nn.Module):
    """The vision encoder graph. pixel_values -> image_features [B,P,E], vision_levels [B,3,P,Dv].

    vision_levels are the ViT's (CLIP's role, frozen after stage 0). image_features, what the LLM
    sees through the projector, are the stride-8 map of the experts' shared convolutional trunk over
    the pixels and those levels (a hybrid encoder, a departure): measured on the stage-0 weights, a
    linear probe on mask-pooled ViT features told the four shape kinds apart 57 % of the time and one
    on the trunk's features 100 %, and the LLM had answered the kind wrong in 40 % of region questions.

    The trunk belongs to the perception expert; it is held here without registering it (a tuple), so
    its weights have one owner and train only with the experts."""

    def __init__(self, c: Config, trunk: nn.Module):
        super().__init__()
        self.vit = VisionEncoder(c)
        self._trunk = (trunk,)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, levels = self.vit(pixel_values)
        f16 = self._trunk[0](pixel_values, levels)[2]
        return f16.flatten(2).transpose(1, 2), levels


class Projector(nn.Module):
    """image_features [B,P,E] -> image_embeds [B,P/4,D]: 2x2 neighbours concatenated, then Linear-GELU-Linear."""

    def __init__(self, c: Config):
        super().__init__()
        self.grid = c.grid
        self.net = nn.Sequential(nn.Linear(4 * c.expert_width, c.llm_dim), nn.GELU(), nn.Linear(c.llm_dim, c.llm_dim))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        b, _, d = image_features.shape
        g = self.grid
        x = (
            image_features.reshape(b, g // 2, 2, g // 2, 2, d)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b, (g // 2) ** 2, 4 * d)
        )
        return self.net(x)


class RegionEncoder(nn.Module):
    """Image and binary mask stacked as 4 channels -> conv stack to the ViT grid, plus the last three
    ViT levels, averaged inside the mask, beside the experts' trunk features averaged the same way
    (what an object is, see VisionTower) -> region_embeds [B,D]. The trunk is held, not owned."""

    def __init__(self, c: Config, trunk: nn.Module):
        super().__init__()
        self.grid = c.grid
        self.convs = nn.Sequential(
            nn.Conv2d(4, 32, 3, 2, 1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.GELU(),
            nn.Conv2d(64, c.vit_dim, 3, 2, 1),
        )
        self.out = nn.Sequential(
            nn.Linear(c.vit_dim + c.expert_width, c.llm_dim), nn.GELU(), nn.Linear(c.llm_dim, c.llm_dim)
        )
        self.patch = c.patch
        self._trunk = (trunk,)

    def forward(
        self, pixel_values: torch.Tensor, region_mask: torch.Tensor, vision_levels: torch.Tensor
    ) -> torch.Tensor:
        b = pixel_values.shape[0]
        feats = self.convs(torch.cat([pixel_values, region_mask], dim=1))  # [B,Dv,g,g]
        levels = vision_levels.sum(dim=1).transpose(1, 2).reshape(b, -1, self.grid, self.grid)
        feats = torch.cat([feats + levels, self._trunk[0](pixel_values, vision_levels)[2]], dim=1)
        weights = F.avg_pool2d(region_mask, self.patch).flatten(1)  # [B,g*g]
        weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-6)
        pooled = torch.einsum("bcp,bp->bc", feats.flatten(2), weights)
        return self.out(pooled)


# ---------------------------------------------------------------- LLM (LLaMA architecture)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class LlamaLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads = c.llm_heads
        self.head_dim = c.llm_dim // c.llm_heads
        self.input_norm = RMSNorm(c.llm_dim)
        self.q_proj = nn.Linear(c.llm_dim, c.llm_dim, bias=False)
        self.k_proj = nn.Linear(c.llm_dim, c.llm_dim, bias=False)
        self.v_proj = nn.Linear(c.llm_dim, c.llm_dim, bias=False)
        self.o_proj = nn.Linear(c.llm_dim, c.llm_dim, bias=False)
        self.post_norm = RMSNorm(c.llm_dim)
        self.gate = nn.Linear(c.llm_dim, c.llm_ffn, bias=False)
        self.up = nn.Linear(c.llm_dim, c.llm_ffn, bias=False)
        self.down = nn.Linear(c.llm_ffn, c.llm_dim, bias=False)

    def forward(self, x, cos, sin, bias, past_k, past_v):
        b, s, _ = x.shape
        h = self.input_norm(x)
        q = self.q_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)  # [B,H,S,hd]
        k = self.k_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # [B,H,S,P+S]
        attn = torch.softmax(scores, dim=-1) @ v
        return self.finish(x, attn), k, v

    def finish(self, x, attn):
        b, _, s, _ = attn.shape
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, s, -1))
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))

    def decode(self, x, cos, sin, bias, past_k, past_v):
        """One new token per row against a fixed-capacity cache that is read, never copied: the new
        token's own score is computed apart and joined to the cache's scores, and only the new key and
        value are returned (the caller writes them into its cache). Same result as `forward`."""
        b, s, _ = x.shape
        h = self.input_norm(x)
        q = self.q_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)  # [B,H,1,hd]
        k = self.k_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        q = (q * cos + rotate_half(q) * sin) / math.sqrt(self.head_dim)
        k = k * cos + rotate_half(k) * sin
        cached = q @ past_k.transpose(-1, -2) + bias  # [B,H,1,P]
        own = (q * k).sum(-1, keepdim=True)  # [B,H,1,1]
        weights = torch.softmax(torch.cat([cached, own], dim=-1), dim=-1)
        p = past_k.shape[2]
        attn = weights[..., :p] @ past_v + weights[..., p:] * v
        return self.finish(x, attn), k, v


class LLM(nn.Module):
    """inputs_embeds [B,S,D], attention_mask [B,P+S] (1 = attend), position_ids [B,S], past k/v
    [B,H,P,hd] per layer -> logits [B,S,V], last_hidden_state [B,S,D] (post-norm), present k/v."""

    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.llm_dim)
        self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c.llm_layers))
        self.norm = RMSNorm(c.llm_dim)
        self.lm_head = nn.Linear(c.llm_dim, c.vocab_size, bias=False)
        hd = c.llm_dim // c.llm_heads
        self.register_buffer(
            "inv_freq", 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2).float() / hd)), persistent=False
        )

    def forward(self, inputs_embeds, attention_mask, position_ids, past: list[torch.Tensor] | None = None):
        b, s, _ = inputs_embeds.shape
        freqs = position_ids.float()[..., None] * self.inv_freq  # [B,S,hd/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B,1,S,hd]
        cos, sin = emb.cos(), emb.sin()
        total = attention_mask.shape[1]
        past_len = total - s
        key_idx = torch.arange(total, device=inputs_embeds.device)[None, :]
        query_idx = torch.arange(s, device=inputs_embeds.device)[:, None] + past_len
        allowed = (key_idx <= query_idx)[None, None] & (attention_mask[:, None, None, :] > 0)  # [B,1,S,P+S]
        bias = (~allowed).float() * -1e9
        x = inputs_embeds
        present = []
        for i, layer in enumerate(self.layers):
            pk = past[2 * i] if past is not None else None
            pv = past[2 * i + 1] if past is not None else None
            x, k, v = layer(x, cos, sin, bias, pk, pv)
            present += [k, v]
        hidden = self.norm(x)
        return self.lm_head(hidden), hidden, present

    def decode_step(self, inputs_embeds, attention_mask, position_ids, past: list[torch.Tensor]):
        """The batched decode step of serving: inputs_embeds [B,1,D], attention_mask [B,P] over the
        cache slots (1 = filled), position_ids [B,1], past k/v [B,H,P,hd] -> logits, hidden and only
        the new token's k/v [B,H,1,hd] per layer. The new token always attends to itself."""
        freqs = position_ids.float()[..., None] * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        cos, sin = emb.cos(), emb.sin()
        bias = (attention_mask[:, None, None, :] <= 0).float() * -1e9  # [B,1,1,P]
        x = inputs_embeds
        new = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.decode(x, cos, sin, bias, past[2 * i], past[2 * i + 1])
            new += [k, v]
        hidden = self.norm(x)
        return self.lm_head(hidden), hidden, new


# ---------------------------------------------------------------- super link


class PerceptionLink(nn.Module):
    """Hidden states at the 4 query positions [G,N,D] -> one class embedding per routing group [G,link]."""

    def __init__(self, c: Config):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(c.llm_dim, c.link_dim),
            nn.ReLU(),
            nn.Linear(c.link_dim, c.link_dim),
            nn.ReLU(),
            nn.Linear(c.link_dim, c.link_dim),
        )

    def forward(self, query_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(query_states).mean(dim=1)


class GenerationLink(nn.Module):
    """Hidden states at the generation query positions [B,Nq,D] -> conditioning [B,Nq,gen_dim]:
    Linear, GELU, Linear, then a small transformer with learnable queries."""

    def __init__(self, c: Config):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(c.llm_dim, c.gen_dim * 2), nn.GELU(), nn.Linear(c.gen_dim * 2, c.gen_dim))
        self.queries = nn.Parameter(torch.randn(1, c.gen_queries, c.gen_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(c.gen_dim, 4, cross=True) for _ in range(2))

    def forward(self, query_states: torch.Tensor) -> torch.Tensor:
        memory = self.proj(query_states)
        x = self.queries.expand(query_states.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, memory)
        return x


# ---------------------------------------------------------------- task decoders (perception and pose: experts.py)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None] * 1000.0 * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.t = nn.Linear(tdim, cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class CrossAttn2d(nn.Module):
    def __init__(self, ch: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, ch)
        self.attn = nn.MultiheadAttention(ch, 4, kdim=cond_dim, vdim=cond_dim, batch_first=True)

    def forward(self, x, cond):
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(q, cond, cond, need_weights=False)[0].transpose(1, 2).reshape(b, c, h, w)


class Denoiser(nn.Module):
    """The Stable Diffusion / InstructPix2Pix role, as a flow-matching UNet at gen_res x gen_res.
    sample [B,3,r,r], timestep [B] (0 = noise, 1 = data), conditioning [B,Nq,gen_dim]
    (+ source_image [B,3,r,r] for editing) -> velocity [B,3,r,r]."""

    def __init__(self, c: Config, edit: bool):
        super().__init__()
        c1, c2, c3 = c.gen_channels
        tdim = c3
        self.edit = edit
        self.tdim = tdim
        self.temb = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(6 if edit else 3, c1, 3, 1, 1)
        self.d1 = ResBlock(c1, c1, tdim)
        self.down1 = nn.Conv2d(c1, c2, 3, 2, 1)
        self.d2 = ResBlock(c2, c2, tdim)
        self.x2 = CrossAttn2d(c2, c.gen_dim)
        self.down2 = nn.Conv2d(c2, c3, 3, 2, 1)
        self.mid = ResBlock(c3, c3, tdim)
        self.xm = CrossAttn2d(c3, c.gen_dim)
        self.mid2 = ResBlock(c3, c3, tdim)
        self.up2 = nn.ConvTranspose2d(c3, c2, 4, 2, 1)
        self.u2 = ResBlock(2 * c2, c2, tdim)
        self.xu = CrossAttn2d(c2, c.gen_dim)
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, 2, 1)
        self.u1 = ResBlock(2 * c1, c1, tdim)
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, 3, 3, 1, 1))

    def forward(self, sample, timestep, conditioning, source_image=None):
        temb = self.temb(timestep_embedding(timestep, self.tdim))
        if source_image is None:
            x = self.inp(sample)
        else:
            # The same as one 6-channel convolution over [sample, source], written as two 3-channel
            # ones: Dawn's OpenGL ES backend computes a Conv with 6 input channels wrongly (max |diff|
            # 2.5 against PyTorch), while 3-channel ones match to 3e-6.
            w = self.inp.weight
            x = F.conv2d(sample, w[:, :3], self.inp.bias, padding=1) + F.conv2d(source_image, w[:, 3:], padding=1)
        h1 = self.d1(x, temb)
        h2 = self.x2(self.d2(self.down1(h1), temb), conditioning)
        m = self.mid2(self.xm(self.mid(self.down2(h2), temb), conditioning), temb)
        u2 = self.xu(self.u2(torch.cat([self.up2(m), h2], 1), temb), conditioning)
        u1 = self.u1(torch.cat([self.up1(u2), h1], 1), temb)
        return self.out(u1)


class EditDenoiser(Denoiser):
    def __init__(self, c: Config):
        super().__init__(c, edit=True)

    def forward(self, sample, timestep, conditioning, source_image):  # type: ignore[override]
        return super().forward(sample, timestep, conditioning, source_image)


class VisionLLMv2Nano(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        # Pretrained standalone in stage 0 (pretrain.py) and loaded before stage 1; they share one trunk,
        # which the vision tower and the region encoder read too.
        from .experts import PerceptionExpert, PoseExpert

        self.perception_decoder = PerceptionExpert(c)
        self.pose_decoder = PoseExpert(c, self.perception_decoder.backbone)
        self.vision = VisionTower(c, self.perception_decoder.backbone)
        self.projector = Projector(c)
        self.region = RegionEncoder(c, self.perception_decoder.backbone)
        self.llm = LLM(c)
        # Super-link query tables: own tables, never rows of the token-embedding matrix.
        self.perception_queries = nn.Parameter(torch.randn(c.perception_queries, c.llm_dim) * 0.02)
        self.pose_queries = nn.Parameter(torch.randn(c.perception_queries, c.llm_dim) * 0.02)
        self.generation_queries = nn.Parameter(torch.randn(c.gen_queries, c.llm_dim) * 0.02)
        self.editing_queries = nn.Parameter(torch.randn(c.gen_queries, c.llm_dim) * 0.02)
        self.perception_link = PerceptionLink(c)
        self.pose_link = PerceptionLink(c)
        self.generation_link = GenerationLink(c)
        self.editing_link = GenerationLink(c)
        self.generator = Denoiser(c, edit=False)
        self.editor = EditDenoiser(c)

    def groups(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        return {
            "vision": [self.vision.vit],  # pretrained in stage 0 with the experts, then frozen (CLIP's place)
            "encoders": [self.projector, self.region],
            "llm": [self.llm],
            "queries": [self.perception_queries, self.pose_queries, self.generation_queries, self.editing_queries],
            "links": [self.perception_link, self.pose_link],
            "experts": [self.perception_decoder, self.pose_decoder],
            "decoders": [self.generation_link, self.editing_link, self.generator, self.editor],
        }


IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


def default_device() -> torch.device:
    """Where factory functions put new tensors: the CPU, or the GPU a run with --device cuda set
    (torch.set_default_device; torch 1.13 has no getter for it)."""
    return torch.empty(0).device


def from_numpy(array) -> torch.Tensor:
    """torch.from_numpy on the default device, which every factory function follows but from_numpy does not."""
    return torch.from_numpy(array).to(default_device())


def normalize_image(images_uint8: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] uint8 -> [B,3,H,W] float, (x/255 - mean) / std, as the manifest states."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGE_STD)[None, :, None, None]
    return (x - mean) / std
