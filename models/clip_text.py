"""CLIP's causal text transformer (AudioCLIP's text tower) in the official top-level key layout.

State-dict keys (no prefix), as at the top level of an official CLIP / AudioCLIP file:
``transformer.resblocks.N.{attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight,
attn.out_proj.bias, ln_1.*, mlp.c_fc.*, mlp.c_proj.*, ln_2.*}`` (12 keys per block),
``token_embedding.weight``, ``positional_embedding``, ``ln_final.{weight,bias}``,
``text_projection``. The causal mask is a plain attribute (not a buffer), so it is not a key.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.registry import get_config

__all__ = ["CLIPTextTower", "LayerNorm", "QuickGELU", "ResidualAttentionBlock", "Transformer"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (CLIP keeps it fp32 when weights are fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x), mask); x + mlp(ln_2(x)). Tokens are [L, B, width]."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``layers`` residual attention blocks under ``resblocks``."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [L, B, width] -> [L, B, width]; attn_mask [L, L] additive (0 / -inf) or None."""
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def causal_mask(n: int) -> torch.Tensor:
    """[n, n] float32 additive mask: 0 on and below the diagonal, -inf above."""
    return torch.full((n, n), float("-inf")).triu_(1)


class CLIPTextTower(nn.Module):
    """CLIP text encoder: tokens [B, context_length] int64 -> text embedding [B, embed_dim].

    Official AudioCLIP: embed_dim 1024, context_length 77, vocab_size 49408, width 512, heads 8,
    layers 12 (63,690,240 parameters). Pooling takes the position of the largest token id in each
    row, i.e. ``<|endoftext|>`` for CLIP BPE tokens.
    """

    def __init__(
        self,
        embed_dim: int = 1024,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.embed_dim = embed_dim
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.transformer = Transformer(width, layers, heads)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        # A plain attribute, not a buffer: it is not part of the official state dict.
        self.attn_mask = causal_mask(context_length)
        self._init_parameters()

    @classmethod
    def from_config(cls, name: str = "audioclip") -> CLIPTextTower:
        """Build from ``models.registry.get_config(name)["clip"]`` (random weights)."""
        c = get_config(name)["clip"]
        return cls(
            embed_dim=c["embed_dim"],
            context_length=c["context_length"],
            vocab_size=c["vocab_size"],
            width=c["transformer_width"],
            heads=c["transformer_heads"],
            layers=c["transformer_layers"],
        )

    def _init_parameters(self) -> None:
        # CLIP's initialisation (clip/model.py CLIP.initialize_parameters, text part).
        width, layers = self.transformer.width, self.transformer.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, context_length] int64 CLIP BPE ids in [0, vocab_size) (SOT ... EOT, zero
        padded) -> text embedding [B, embed_dim] float (not L2-normalised), taken at the argmax
        token id of each row."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be int64 (or int32) token ids, got {tokens.dtype}")
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must be [B, {self.context_length}], got {list(tokens.shape)}")
        if not torch.compiler.is_compiling() and tokens.numel():
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, {self.vocab_size}), got range [{lo}, {hi}]"
                )
        tokens = tokens.long()
        x = self.token_embedding(tokens) + self.positional_embedding.to(
            self.token_embedding.weight.dtype
        )
        mask = self.attn_mask.to(device=x.device, dtype=x.dtype)
        x = self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2)  # [B, L, width]
        x = self.ln_final(x)
        eot = tokens.argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
