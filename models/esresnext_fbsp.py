"""ESResNeXt-FBSP: AudioCLIP's audio tower, with the numerics and state-dict layout of the original.

The module tree reproduces the official ``audio.`` keys of AudioCLIP (370 keys for the full
configuration, prefix stripped), so an official checkpoint loads with ``strict=True``:

- ``window``: periodic window buffer (scipy ``get_window(..., fftbins=True)``), [win_length];
- ``fbsp.m``, ``fbsp.fb``, ``fbsp.fc`` [n_fft//2+1] and ``fbsp.bias`` (an *empty* (0,) tensor):
  the learned analytic Fourier filterbank (LinearFBSP); its complex weights are recomputed from the
  three parameter vectors on every call (:func:`fbsp_filterbank`);
- ``conv1/bn1`` stem, ``layer1..layer4`` ResNeXt bottlenecks (torchvision layout, stride on the
  3x3 conv, ``downsample.0`` 1x1 conv + ``downsample.1`` BatchNorm);
- ``att1..att5``: :class:`Attention2d` gates (adaptive max-pool of a stage *input* to the size of
  the stage *output*, depthwise conv, pointwise conv, BatchNorm, sigmoid), multiplying each stage
  output and (``att5``) the global average pool;
- ``fc``: Linear(2048, num_classes).

Forward path (all float32): waveform in int16 units -> ``(x + 32768) * 2 / 65535 - 1`` ->
symmetric zero-padded framing (``1 + ceil((T - win) / hop)`` frames) x window -> centred zero pad to
n_fft -> FBSP filterbank (re, im) -> re^2 + im^2 -> the first ``3 * (bins // 3)`` bins split into
3 bands = the 3 input channels -> ``10 * log10(p if p > 0 else 1e-18)`` -> CNN trunk. Every audio
channel runs through the trunk on its own and the pooled 2048-d vectors are summed before ``fc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Attention2d",
    "Bottleneck",
    "ESResNeXtFBSP",
    "LinearFBSP",
    "PoolFn",
    "fbsp_filterbank",
    "frame_count",
    "scale_int16",
]

INT16_MIN = -32768.0
INT16_MAX = 32767.0
LOG10_EPS = 1e-18
FBSP_EPS = 1e-8

# pool(att_index 0..4, stage_input [N, C, H, W], (out_h, out_w)) -> [N, C, out_h, out_w]
PoolFn = Callable[[int, torch.Tensor, tuple[int, int]], torch.Tensor]


def _adaptive_max_pool(index: int, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.adaptive_max_pool2d(x, size)


def scale_int16(x: torch.Tensor) -> torch.Tensor:
    """Map int16 units to [-1, 1] as the original does: ``(x + 32768) * 2 / 65535 - 1``.

    ``x``: float tensor of any shape (waveform samples in int16 units, nominally [-32768, 32767]).
    Returns a tensor of the same shape and dtype; note the +1.5e-5 DC offset of this mapping.
    """
    old_range = INT16_MAX - INT16_MIN
    return ((x - INT16_MIN) * 2.0) / old_range + (-1.0)


def frame_count(num_samples: int, win_length: int, hop_length: int) -> int:
    """Number of frames of the original framing: 1 if T <= win, else ``1 + ceil((T - win) / hop)``."""
    if num_samples <= win_length:
        return 1
    return 1 + (num_samples - win_length + hop_length - 1) // hop_length


def fbsp_filterbank(
    m: torch.Tensor,
    fb: torch.Tensor,
    fc: torch.Tensor,
    in_features: int,
    normalized: bool,
    eps: float = FBSP_EPS,
) -> torch.Tensor:
    """The LinearFBSP complex filterbank, computed op by op as in the original.

    ``m``, ``fb``, ``fc``: [O] float (window power, bandwidth, centre frequency per bin).
    Returns [O, in_features, 2] (real, imaginary) of the same dtype: with
    ``t = pi * linspace(-1, 1, in_features) + eps`` the weight of bin k at tap j is
    ``sqrt(fb) * sinc(fb * t / (m + eps)) ** m * (cos(fc * t) - i sin(fc * t))``, the complex power
    taken through magnitude/phase (atan2, log), divided by ``sqrt(in_features)`` when normalized.
    """
    if m.dim() != 1 or fb.shape != m.shape or fc.shape != m.shape:
        raise ValueError(
            f"m, fb, fc must be 1-D of one length, got {tuple(m.shape)}, {tuple(fb.shape)}, {tuple(fc.shape)}"
        )
    t = math.pi * torch.linspace(-1.0, 1.0, in_features, dtype=m.dtype, device=m.device)
    t = t.reshape(1, -1, 1) + eps  # [1, L, 1]
    m = m.reshape(-1, 1, 1)
    fb = fb.reshape(-1, 1, 1)
    fc = fc.reshape(-1, 1, 1)
    kern_re = torch.cos(fc * t)
    kern_im = -torch.sin(fc * t)
    gain = fb.sqrt()
    arg = fb * t / (m + eps)
    win = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)  # real, [O, L, 1]
    # complex power (win + 0i) ** (m + 0i) through polar form, as the original computes it
    win_im = torch.zeros_like(win)
    p_im = torch.zeros_like(m)
    mag = (win**2 + win_im**2) ** 0.5
    phase = win_im.atan2(win)
    mag_out = (mag**2) ** (0.5 * m) * torch.exp(-p_im * phase)
    ang = m * phase + 0.5 * p_im * (mag**2).log()
    w_re = mag_out * ang.cos()
    w_im = mag_out * ang.sin()
    weights = gain * torch.cat(
        (w_re * kern_re - w_im * kern_im, w_re * kern_im + w_im * kern_re), -1
    )
    if normalized:
        weights = weights / (in_features**0.5)
    return weights


class LinearFBSP(nn.Module):
    """Learned Fourier filterbank: parameters ``m``, ``fb``, ``fc`` [O] and an empty ``bias`` (0,).

    The original registers ``Parameter(None)`` for a disabled bias, which is an empty tensor in
    the state dict; it is kept so official files load strictly, and it is never used.
    """

    def __init__(self, out_features: int, normalized: bool = False):
        super().__init__()
        self.out_features = int(out_features)
        self.normalized = bool(normalized)
        self.eps = FBSP_EPS
        self.m = nn.Parameter(torch.zeros(self.out_features))
        self.fb = nn.Parameter(torch.ones(self.out_features))
        self.fc = nn.Parameter(torch.arange(self.out_features, dtype=torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.empty(0))

    def weights(self, in_features: int) -> torch.Tensor:
        """Complex filterbank [out_features, in_features, 2] (real, imag), float like ``m``."""
        return fbsp_filterbank(self.m, self.fb, self.fc, in_features, self.normalized, self.eps)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., L] real frames -> (real [..., O], imaginary [..., O]) filterbank responses."""
        if frames.dim() < 1:
            raise ValueError("frames must have at least one dimension [..., L]")
        w = self.weights(int(frames.shape[-1]))
        return F.linear(frames, w[..., 0]), F.linear(frames, w[..., 1])

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, bias=False, normalized={self.normalized}"


class Attention2d(nn.Module):
    """Attention gate: adaptive max-pool -> depthwise conv -> pointwise conv -> BN -> sigmoid.

    ``forward(x, size)``: x [N, in_channels, H, W] float -> gate [N, out_channels, *size] in (0, 1).
    :meth:`gate` applies everything after the pooling (for callers with their own pooling).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_kernels: int,
        kernel_size: tuple[int, int],
        padding_size: tuple[int, int],
    ):
        super().__init__()
        self.conv_depth = nn.Conv2d(
            in_channels,
            in_channels * num_kernels,
            kernel_size,
            padding=padding_size,
            groups=in_channels,
        )
        self.conv_point = nn.Conv2d(in_channels * num_kernels, out_channels, (1, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.activation = nn.Sigmoid()

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """[N, in_channels, h, w] pooled stage input -> [N, out_channels, h, w] gate in (0, 1)."""
        return self.activation(self.bn(self.conv_point(self.conv_depth(pooled))))

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.gate(F.adaptive_max_pool2d(x, tuple(int(s) for s in size)))


class Bottleneck(nn.Module):
    """torchvision's ResNeXt bottleneck (stride on the 3x3 conv), [N, inplanes, H, W] -> [N, 4*planes, H', W']."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


# kernel and padding of att1..att5 in the original
_ATT_KERNELS = (
    ((3, 1), (1, 0)),
    ((1, 5), (0, 2)),
    ((3, 1), (1, 0)),
    ((1, 5), (0, 2)),
    ((3, 5), (1, 2)),
)


def _conv_out(n: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class ESResNeXtFBSP(nn.Module):
    """AudioCLIP's ESResNeXt-FBSP audio encoder (official ``audio.`` key layout).

    Constructor keywords are those of ``models.registry.get_config(name)["audio"]``.
    ``forward(x)``: waveform [B, T] (mono) or [B, C, T], float, 44.1 kHz, in int16 units
    (nominally [-32768, 32767]; AudioCLIP was trained on ``librosa.load(...) * 32768``)
    -> embedding [B, num_classes] float32 (not normalised).
    """

    def __init__(
        self,
        n_fft: int = 2048,
        hop_length: int | None = 561,
        win_length: int | None = 1654,
        window: str | tuple | None = "blackmanharris",
        normalized: bool = True,
        onesided: bool = True,
        num_classes: int = 1024,
        layers: Sequence[int] = (3, 4, 6, 3),
        groups: int = 32,
        width_per_group: int = 4,
        apply_attention: bool = True,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        if n_fft < 2:
            raise ValueError(f"n_fft must be >= 2, got {n_fft}")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length) if hop_length is not None else self.n_fft // 4
        self.win_length = int(win_length) if win_length is not None else self.n_fft
        if self.hop_length < 1 or self.win_length < 1:
            raise ValueError(
                f"hop_length and win_length must be >= 1, got {hop_length}, {win_length}"
            )
        self.normalized = bool(normalized)
        self.onesided = bool(onesided)
        self.num_classes = int(num_classes)
        self.apply_attention = bool(apply_attention)
        self.groups = int(groups)
        self.base_width = int(width_per_group)
        self.num_bands = 3  # the 3 "RGB" input channels of the CNN
        self.log10_eps = LOG10_EPS
        window = "boxcar" if window is None else window

        # registration order = official state-dict order: window, conv1, bn1, layer1, att1, ...
        win = scipy.signal.get_window(window, self.win_length, fftbins=True)
        self.register_buffer(
            "window", torch.from_numpy(np.asarray(win)).to(torch.get_default_dtype())
        )

        self.inplanes = 64
        self.conv1 = nn.Conv2d(self.num_bands, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        exp = Bottleneck.expansion
        att_channels = (
            (64, 64 * exp),
            (64 * exp, 128 * exp),
            (128 * exp, 256 * exp),
            (256 * exp, 512 * exp),
            (512 * exp, 512 * exp),
        )
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
            self.add_module(f"layer{i + 1}", self._make_layer(planes, layers[i], stride))
            if self.apply_attention:
                (cin, cout), (k, p) = att_channels[i], _ATT_KERNELS[i]
                self.add_module(f"att{i + 1}", Attention2d(cin, cout, 1, k, p))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if self.apply_attention:
            (cin, cout), (k, p) = att_channels[4], _ATT_KERNELS[4]
            self.att5 = Attention2d(cin, cout, 1, k, p)
        self.fc = nn.Linear(512 * exp, self.num_classes)
        out_bins = int(round(self.n_fft / 2)) + 1 if self.onesided else self.n_fft
        self.fbsp = LinearFBSP(out_bins, normalized=self.normalized)
        self.bins_per_band = out_bins // self.num_bands
        if self.bins_per_band < 1:
            raise ValueError(
                f"n_fft={n_fft} gives {out_bins} bins, fewer than {self.num_bands} bands"
            )

        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.constant_(mod.weight, 1)
                nn.init.constant_(mod.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        exp = Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != planes * exp:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * exp, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * exp),
            )
        mods = [Bottleneck(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * exp
        for _ in range(1, blocks):
            mods.append(Bottleneck(self.inplanes, planes, 1, None, self.groups, self.base_width))
        return nn.Sequential(*mods)

    # --- geometry ------------------------------------------------------------------------------

    @property
    def fft_length(self) -> int:
        """Taps of the filterbank: n_fft, or win_length when the window is longer (no padding)."""
        return max(self.n_fft, self.win_length)

    @property
    def frame_pad(self) -> tuple[int, int]:
        """Zeros added (left, right) to each windowed frame to reach n_fft (197, 197 for AudioCLIP)."""
        extra = max(self.n_fft - self.win_length, 0)
        return extra // 2, extra - extra // 2

    @property
    def used_bins(self) -> int:
        """Filterbank bins that reach the CNN: ``3 * (bins // 3)`` (1023 of 1025 for AudioCLIP)."""
        return self.num_bands * self.bins_per_band

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram width for a clip of ``num_samples`` samples (77 for 1 s, 392 for 5 s)."""
        return frame_count(int(num_samples), self.win_length, self.hop_length)

    def signal_pad(self, num_samples: int) -> tuple[int, int]:
        """Zeros added (left, right) to a clip of ``num_samples`` samples before framing."""
        n = self.num_frames(num_samples)
        extra = max((n - 1) * self.hop_length + self.win_length - int(num_samples), 0)
        return extra // 2, extra - extra // 2

    def attention_pool_sizes(
        self, num_samples: int
    ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """For att1..att5: ((in_h, in_w), (out_h, out_w)) of the adaptive max-pool at this clip length.

        Computed from the conv/pool arithmetic of the trunk (Python ints, no tensors).
        """
        h, w = self.bins_per_band, self.num_frames(num_samples)
        c = self.conv1
        h = _conv_out(h, c.kernel_size[0], c.stride[0], c.padding[0], c.dilation[0])
        w = _conv_out(w, c.kernel_size[1], c.stride[1], c.padding[1], c.dilation[1])
        mp = self.maxpool
        h = _conv_out(h, mp.kernel_size, mp.stride, mp.padding, mp.dilation)
        w = _conv_out(w, mp.kernel_size, mp.stride, mp.padding, mp.dilation)
        sizes = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            hin, win = h, w
            for block in layer:
                c = block.conv2
                h = _conv_out(h, c.kernel_size[0], c.stride[0], c.padding[0], c.dilation[0])
                w = _conv_out(w, c.kernel_size[1], c.stride[1], c.padding[1], c.dilation[1])
            sizes.append(((hin, win), (h, w)))
        sizes.append(((h, w), (1, 1)))
        return sizes

    # --- front end -----------------------------------------------------------------------------

    def filterbank(self) -> torch.Tensor:
        """FBSP complex weights [bins, fft_length, 2] (real, imag), recomputed from m, fb, fc."""
        return self.fbsp.weights(self.fft_length)

    def _check_waveform(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"waveform must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"waveform must be real-valued (float or int16 units), got {x.dtype}")
        if x.dim() not in (2, 3) or x.shape[-1] < 1 or x.shape[0] < 1:
            raise ValueError(
                f"waveform must be [B, T] or [B, C, T] with B, T >= 1, got {tuple(x.shape)}"
            )
        channels = 1 if x.dim() == 2 else int(x.shape[1])
        if channels < 1:
            raise ValueError(f"waveform has no channels: {tuple(x.shape)}")
        return x.to(self.window.dtype), channels

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled waveform [N, T] float in [-1, 1] -> windowed, n_fft-padded frames [N, F, fft_length]
        (in x's dtype; the window is cast to it)."""
        left, right = self.signal_pad(int(x.shape[-1]))
        if left or right:
            x = F.pad(x, (left, right))
        fr = x.unfold(-1, self.win_length, self.hop_length) * self.window.to(x.dtype)
        pl, pr = self.frame_pad
        if pl or pr:
            fr = F.pad(fr, (pl, pr))
        return fr

    def spectrogram(
        self, x: torch.Tensor, frontend_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The dB input of the CNN: waveform [B, T] or [B, C, T] (int16 units) -> [B*C, 3, bins//3, F].

        Row b*C + c holds channel c of item b; band k holds bins [k*H, (k+1)*H) with H = bins // 3;
        values are ``10 * log10(re^2 + im^2)`` with non-positive powers floored to 1e-18 (-180 dB).

        ``frontend_dtype``: the dtype of the framing, window, filterbank and power steps (same
        steps, same order); None = the model's dtype (float32: the original's numerics). With
        ``torch.float64`` the int16 scaling, the window and the filterbank weights are still
        computed in the model's dtype, as the original computes them (the float32 scaling
        quantises a [-1, 1]-scale input, a real effect of the original), and only the products,
        the sums over the 1654 taps and the power are exact. In float32 the bins more than
        ~100 dB below a frame's loudest bin are rounding noise of those sums (0.1 dB and more
        apart between any two float32 evaluations); the float64 front end is the reference that
        exported graphs are held to. The result is returned in the model's dtype.
        """
        x, _ = self._check_waveform(x)
        out_dtype = x.dtype
        dt = out_dtype if frontend_dtype is None else frontend_dtype
        x = scale_int16(x.reshape(-1, x.shape[-1])).to(dt)
        if dt == out_dtype:
            re, im = self.fbsp(self.frames(x))  # [N, F, bins] each
        else:
            fr = self.frames(x)  # the window in the model's dtype, cast to dt
            w = self.fbsp.weights(int(fr.shape[-1])).to(dt)  # the model's filterbank, cast to dt
            re, im = F.linear(fr, w[..., 0]), F.linear(fr, w[..., 1])
        power = (re**2 + im**2).transpose(-1, -2)[:, : self.used_bins]  # [N, used, F]
        power = torch.where(power > 0.0, power, torch.full_like(power, self.log10_eps))
        power = power.unflatten(1, (self.num_bands, self.bins_per_band))
        return torch.log10(power).mul(10.0).to(out_dtype)

    # --- trunk ---------------------------------------------------------------------------------

    def stage_features(self, x: torch.Tensor, pool: PoolFn | None = None) -> torch.Tensor:
        """Spectrogram [N, 3, H, W] dB -> gated layer4 output [N, 2048, H/32, W/32] (ceil-ish sizes).

        ``pool(i, stage_input, (h, w))`` replaces ``F.adaptive_max_pool2d`` in the gate of stage i.
        """
        pool = pool or _adaptive_max_pool
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x_in = x
            x = layer(x)
            if self.apply_attention:
                att = getattr(self, f"att{i + 1}")
                x = x * att.gate(pool(i, x_in, (int(x.shape[-2]), int(x.shape[-1]))))
        return x

    def reduce(self, x: torch.Tensor, pool: PoolFn | None = None) -> torch.Tensor:
        """Layer4 output [N, 2048, h, w] -> pooled [N, 2048]: average pool gated by att5(max pool)."""
        pool = pool or _adaptive_max_pool
        y = self.avgpool(x)
        if self.apply_attention:
            y = y * self.att5.gate(pool(4, x, (1, 1)))
        return torch.flatten(y, 1)

    def embed_from_spectrogram(
        self, spec: torch.Tensor, channels: int = 1, pool: PoolFn | None = None
    ) -> torch.Tensor:
        """dB spectrogram [B*C, 3, H, W] (rows b*C + c) -> embedding [B, num_classes] float.

        Each channel runs through the trunk separately; the pooled vectors are summed before fc.
        """
        if spec.dim() != 4 or int(spec.shape[1]) != self.num_bands:
            raise ValueError(
                f"spectrogram must be [B*C, {self.num_bands}, H, W], got {tuple(spec.shape)}"
            )
        channels = int(channels)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if channels == 1:
            return self.fc(self.reduce(self.stage_features(spec, pool), pool))
        if spec.shape[0] % channels:
            raise ValueError(
                f"{spec.shape[0]} spectrogram rows are not a multiple of {channels} channels"
            )
        spec = spec.unflatten(0, (-1, channels))
        pooled = [self.reduce(self.stage_features(spec[:, c], pool), pool) for c in range(channels)]
        return self.fc(torch.stack(pooled, dim=-1).sum(dim=-1))

    def forward(self, x: torch.Tensor, frontend_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Waveform [B, T] or [B, C, T] in int16 units (44.1 kHz) -> embedding [B, num_classes].

        ``frontend_dtype``: see :meth:`spectrogram` (None: the original's float32 front end;
        ``torch.float64``: the exact front end the exported graph computes)."""
        x, channels = self._check_waveform(x)
        return self.embed_from_spectrogram(self.spectrogram(x, frontend_dtype), channels)
