"""CLIP's ModifiedResNet visual tower (AudioCLIP's RN50) with the Sam4AVS dense outputs.

The module tree reproduces the official ``visual.`` state-dict layout of CLIP / AudioCLIP
(339 keys for RN50, prefix stripped), so an official checkpoint loads with ``strict=True``:

- stem: ``conv1/bn1`` (3 -> width/2, stride 2), ``conv2/bn2`` (width/2 -> width/2),
  ``conv3/bn3`` (width/2 -> width), ReLU after each, then a 2x2 average pool;
- ``layer1..layer4``: anti-aliased Bottlenecks (the stride is an average pool placed after
  ``conv2``; the shortcut is ``downsample`` = avg-pool entry ``"-1"`` without parameters, then
  ``downsample.0`` 1x1 conv and ``downsample.1`` BatchNorm);
- ``attnpool``: a QKV attention pool over the mean token plus the 7x7 grid, with
  ``positional_embedding`` [50, 32*width] and ``k_proj``/``q_proj``/``v_proj``/``c_proj``.

Besides the CLIP image embedding, :meth:`ModifiedResNet.forward_features` returns, from one
trunk pass, the stage outputs, the dense tokens of the supervised AC-FPN backbone (every token
is a query of the same q-k-v attention) and the CLIP-Surgery (v-v attention) tokens used by the
zero-shot heatmaps (spec sam4avs-reference 1.1 and 4.0).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.registry import get_config

__all__ = ["AttentionPool2d", "Bottleneck", "ModifiedResNet"]


class Bottleneck(nn.Module):
    """CLIP's anti-aliased ResNet bottleneck: 1x1 -> 3x3 -> avg-pool(stride) -> 1x1 (x4 channels).

    Input [B, inplanes, H, W] float -> [B, 4*planes, H/stride, W/stride].
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != out:
            pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", pool),  # no parameters: the official keys start at "0"
                        ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                        ("1", nn.BatchNorm2d(out)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class AttentionPool2d(nn.Module):
    """CLIP's QKV attention pool over [mean token, H*W grid tokens] with a learned positional table.

    ``spacial_dim`` is the grid side (7 at 224 px); ``embed_dim`` the trunk width (2048 for RN50);
    ``output_dim`` the joint embedding width (1024). Parameter names follow the official layout.
    """

    def __init__(
        self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.spacial_dim = spacial_dim
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.output_dim = output_dim or embed_dim
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5
        )
        # Definition order k, q, v, c as in the official module (state-dict key order).
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, self.output_dim)

    # -- helpers ----------------------------------------------------------------------------------

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] trunk map -> [B, 1 + h*w, C] tokens (mean token first, grid row-major),
        positional embedding added."""
        b, c, h, w = x.shape
        if h * w + 1 != self.positional_embedding.shape[0]:
            raise ValueError(
                f"attention pool expects a {self.spacial_dim}x{self.spacial_dim} grid, got {h}x{w}"
            )
        grid = x.reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        t = torch.cat([grid.mean(dim=1, keepdim=True), grid], dim=1)
        return t + self.positional_embedding.to(t.dtype)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, heads, N, head_dim]."""
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        """[B, heads, N, head_dim] -> [B, N, C]."""
        b, _, n, _ = t.shape
        return t.transpose(1, 2).reshape(b, n, self.embed_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Multi-head softmax(q k^T * scale) v; q [B, Nq, C], k/v [B, N, C] -> [B, Nq, C]."""
        qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)
        attn = torch.softmax((qh * self.scale) @ kh.transpose(-2, -1), dim=-1)
        return self._merge(attn @ vh)

    # -- outputs ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standard CLIP pooling: [B, C, 7, 7] -> global [B, output_dim] (query = mean token)."""
        t = self.tokens(x)
        out = self._attend(self.q_proj(t[:, :1]), self.k_proj(t), self.v_proj(t))
        return self.c_proj(out[:, 0])

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, C, h, w] -> global/dense (q-k-v, every token a query) and surgery_global/surgery_dense
        (v-v attention, q = k = v = v_proj(tokens)), all through ``c_proj``; dense maps are
        [B, output_dim, h, w] with token (i*w + j) at [:, :, i, j]; nothing is normalised."""
        b, _, h, w = x.shape
        t = self.tokens(x)
        v = self.v_proj(t)
        plain = self.c_proj(self._attend(self.q_proj(t), self.k_proj(t), v))
        surgery = self.c_proj(self._attend(v, v, v))

        def dense(o: torch.Tensor) -> torch.Tensor:
            return o[:, 1:].transpose(1, 2).reshape(b, self.output_dim, h, w)

        return {
            "global": plain[:, 0],
            "dense": dense(plain),
            "surgery_global": surgery[:, 0],
            "surgery_dense": dense(surgery),
        }


class ModifiedResNet(nn.Module):
    """CLIP ModifiedResNet (3-conv stem, anti-aliased bottlenecks, attention pool).

    Arguments as in CLIP: ``layers`` blocks per stage, ``output_dim`` joint embedding width,
    ``heads`` attention-pool heads, ``input_resolution`` the only accepted image side,
    ``width`` stem width (trunk width = 32*width). Official AudioCLIP: layers (3, 4, 6, 3),
    output_dim 1024, heads 32, input_resolution 224, width 64.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] | list[int],
        output_dim: int,
        heads: int,
        input_resolution: int = 224,
        width: int = 64,
    ):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 stage depths, got {layers!r}")
        if input_resolution % 32:
            raise ValueError(f"input_resolution must be a multiple of 32, got {input_resolution}")
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.width = width

        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)

        inplanes = width
        stages = []
        for i, depth in enumerate(layers):
            planes = width * 2**i
            blocks = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)
        self._init_attnpool()

    @classmethod
    def from_config(cls, name: str = "audioclip") -> ModifiedResNet:
        """Build from ``models.registry.get_config(name)["clip"]`` (random weights)."""
        c = get_config(name)["clip"]
        return cls(
            layers=tuple(c["vision_layers"]),
            output_dim=c["embed_dim"],
            heads=c["vision_heads"],
            input_resolution=c["image_resolution"],
            width=c["vision_width"],
        )

    def _init_attnpool(self) -> None:
        # CLIP's initialisation of the pool projections (std = in_features ** -0.5). CLIP also
        # zeroes every bn3.weight; that is not done here so random-weight tests exercise the
        # residual branches (real weights are loaded from a checkpoint anyway).
        std = self.attnpool.c_proj.in_features**-0.5
        for lin in (
            self.attnpool.q_proj,
            self.attnpool.k_proj,
            self.attnpool.v_proj,
            self.attnpool.c_proj,
        ):
            nn.init.normal_(lin.weight, std=std)

    # -- forward ----------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"image must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"image must be a floating-point tensor, got {x.dtype}")
        r = self.input_resolution
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != r or x.shape[3] != r:
            raise ValueError(
                f"image must be [B, 3, {r}, {r}] (CLIP-normalised RGB), got {list(x.shape)}; "
                f"the attention pool's positional table is fixed at {r // 32}x{r // 32}+1 tokens"
            )
        return x.to(self.conv1.weight.dtype)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return x1, x2, x3, x4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP image embedding: x [B, 3, R, R] float32, CLIP-normalised RGB (R = input_resolution)
        -> [B, output_dim] (not L2-normalised)."""
        x = self._check_input(x)
        return self.attnpool(self._trunk(x)[3])

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All features from one trunk pass. x [B, 3, R, R] float32, CLIP-normalised RGB.

        Returns a dict of float tensors (none L2-normalised):
          "x1".."x4": stage outputs [B, 4w*2^i, R/4/2^i, R/4/2^i] (strides 4, 8, 16, 32);
          "global": CLIP image embedding [B, D] (same as :meth:`forward`);
          "dense": [B, D, R/32, R/32], the grid tokens of the same q-k-v attention (every token
            a query over all tokens), then ``c_proj`` (Sam4AVS AC-FPN backbone);
          "surgery_global" [B, D] / "surgery_dense" [B, D, R/32, R/32]: CLIP-Surgery v-v
            attention softmax(v v^T * head_dim**-0.5) v, q = k = v = v_proj(tokens), then
            ``c_proj``; the mean-token row and the grid rows (Sam4AVS zero-shot heatmaps).
        Dense maps are indexed [b, channel, row, col] in image orientation (token i*w + j).
        """
        x = self._check_input(x)
        x1, x2, x3, x4 = self._trunk(x)
        out = {"x1": x1, "x2": x2, "x3": x3, "x4": x4}
        out.update(self.attnpool.forward_all(x4))
        return out
