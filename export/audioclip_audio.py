"""AudioCLIP audio tower -> ONNX: a folded, export-friendly form of ESResNeXt-FBSP for one clip length.

The analytic model (``models.esresnext_fbsp.ESResNeXtFBSP``) does not export: its attention gates
call ``F.adaptive_max_pool2d`` with sizes that do not divide (43 -> 22, 11 -> 6, ...). The folded
form keeps the trunk (the same module objects, so the same weights) and changes two things:

1. the front end (symmetric zero padding, framing, window, FBSP filterbank, power) keeps the
   analytic model's steps in its order but runs in **float64** (the int16 scaling, the window and
   the filterbank weights stay the model's float32 values, cast): the signal is framed by a
   static gather, multiplied by the window, and multiplied by the filterbank restricted to the
   ``win`` taps that meet the frame (the n_fft padding taps multiply zeros), real and imaginary
   rows of the ``3 * (bins // 3)`` used bins; power is re^2 + im^2, floored, ``10 log10``, then
   cast to float32 for the trunk. In float32 the bins 100-150 dB below a frame's peak are rounding
   noise, and an earlier folded float32 Conv1d (window x filterbank in one kernel) departed from
   the analytic front end by up to 0.17 dB there; in float64 both agree to ~1e-9 dB with the
   analytic front end evaluated in float64 (``ESResNeXtFBSP.spectrogram(x, torch.float64)``);
2. every adaptive max-pool becomes a static separable gather + amax whose bin indices are Python
   ints computed for the fixed clip length (reshape + amax where the sizes divide).

The clip length is baked in (one export per length); the batch is dynamic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.onnx_utils import ExportResult, cpu_session, export_graph
from models.esresnext_fbsp import ESResNeXtFBSP, scale_int16
from runtime.bundle.contract import GRAPHS

__all__ = [
    "AudioEncoderForExport",
    "StaticAdaptiveMaxPool2d",
    "adaptive_bins",
    "export_audioclip_audio",
    "fold_audio_encoder",
]

(INPUT_NAME,) = GRAPHS["audioclip_audio"].input_names
(OUTPUT_NAME,) = GRAPHS["audioclip_audio"].output_names


def adaptive_bins(n_in: int, n_out: int) -> list[list[int]]:
    """Index lists of PyTorch's adaptive pooling bins along one axis, padded to equal length.

    Bin i covers ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))``; shorter bins repeat
    their last index (harmless for a max). Returns ``n_out`` lists of equal length.
    """
    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise ValueError(f"adaptive pooling needs n_in, n_out >= 1, got {n_in}, {n_out}")
    bins = []
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        bins.append(list(range(start, end)))
    k = max(len(b) for b in bins)
    return [b + [b[-1]] * (k - len(b)) for b in bins]


class StaticAdaptiveMaxPool2d(nn.Module):
    """``F.adaptive_max_pool2d`` for one fixed input size, as reshape/gather + amax (exportable).

    ``forward(x)``: [N, C, in_h, in_w] float -> [N, C, out_h, out_w], bitwise equal to
    ``F.adaptive_max_pool2d(x, (out_h, out_w))``. Any other input size is refused.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        self._modes: list[tuple[str, int]] = []
        for axis, (n_in, n_out) in enumerate(zip(self.in_hw, self.out_hw, strict=True)):
            if n_in < 1 or n_out < 1:
                raise ValueError(f"pool sizes must be >= 1, got {self.in_hw} -> {self.out_hw}")
            if n_in == n_out:
                self._modes.append(("identity", 1))
            elif n_out == 1:
                self._modes.append(("all", n_in))
            elif n_in % n_out == 0:
                self._modes.append(("reshape", n_in // n_out))
            else:
                bins = adaptive_bins(n_in, n_out)
                flat = torch.tensor([i for b in bins for i in b], dtype=torch.int64)
                self.register_buffer(f"index{axis}", flat, persistent=False)
                self._modes.append(("gather", len(bins[0])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or (int(x.shape[-2]), int(x.shape[-1])) != self.in_hw:
            raise ValueError(
                f"expected [N, C, {self.in_hw[0]}, {self.in_hw[1]}], got {tuple(x.shape)}"
            )
        for axis, (mode, k) in enumerate(self._modes):
            dim = 2 + axis
            if mode == "all":
                x = x.amax(dim=dim, keepdim=True)
            elif mode == "reshape":
                x = x.unflatten(dim, (self.out_hw[axis], k)).amax(dim=dim + 1)
            elif mode == "gather":
                idx = getattr(self, f"index{axis}")
                x = (
                    x.index_select(dim, idx)
                    .unflatten(dim, (self.out_hw[axis], k))
                    .amax(dim=dim + 1)
                )
        return x

    def extra_repr(self) -> str:
        return f"in_hw={self.in_hw}, out_hw={self.out_hw}, modes={[m for m, _ in self._modes]}"


class AudioEncoderForExport(nn.Module):
    """ESResNeXt-FBSP folded for export at a fixed clip length (shares the trunk of ``model``).

    ``forward(waveform)``: [B, T] (or [B, C, T], summed over channels as the original) float32,
    T == ``num_samples``, 44.1 kHz in int16 units -> embedding [B, num_classes] float32.
    The filterbank is a snapshot of ``model.fbsp`` taken at construction: fold again after
    changing the weights.
    """

    def __init__(self, model: ESResNeXtFBSP, num_samples: int):
        super().__init__()
        if not isinstance(model, ESResNeXtFBSP):
            raise TypeError(f"model must be an ESResNeXtFBSP, got {type(model).__name__}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
            raise TypeError(f"num_samples must be an int, got {type(num_samples).__name__}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.encoder = model
        self.num_samples = int(num_samples)
        self.hop_length = model.hop_length
        self.num_bands = model.num_bands
        self.bins_per_band = model.bins_per_band
        self.num_bins = model.used_bins
        self.pad = model.signal_pad(self.num_samples)
        self.num_frames = model.num_frames(self.num_samples)
        self.win_length = model.win_length
        with torch.no_grad():  # the model's float32 filterbank, cast to float64
            w = model.filterbank()[: self.num_bins].double()  # [K, fft_length, 2]
            lo = model.frame_pad[0]
            w = w[:, lo : lo + model.win_length]  # the taps that meet the frame
            kernel = torch.cat((w[..., 0], w[..., 1]), dim=0).unsqueeze(1)  # [2K, 1, win]
        self.register_buffer("filterbank", kernel.contiguous(), persistent=False)  # float64
        self.register_buffer("window", model.window.detach().clone().double(), persistent=False)
        starts = torch.arange(self.num_frames, dtype=torch.int64) * self.hop_length
        index = starts[:, None] + torch.arange(self.win_length, dtype=torch.int64)[None, :]
        self.register_buffer("frame_index", index.reshape(-1), persistent=False)  # [F * win]
        self.pools = nn.ModuleList(
            StaticAdaptiveMaxPool2d(i, o) for i, o in model.attention_pool_sizes(self.num_samples)
        )

    def _pool(self, index: int, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        pool = self.pools[index]
        if tuple(int(s) for s in size) != pool.out_hw:
            raise ValueError(f"gate {index + 1}: pool to {tuple(size)}, folded for {pool.out_hw}")
        return pool(x)

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """[N, T] float (int16 units) -> dB spectrogram float32 [N, 3, bins//3, F], as the analytic
        model's float64 front end: scale, pad, frame, window, filterbank, power in float64."""
        x = scale_int16(waveform.to(torch.float32)).to(
            torch.float64
        )  # the original's float32 scaling
        left, right = self.pad
        if left or right:
            x = F.pad(x, (left, right))
        frames = x.index_select(1, self.frame_index).unflatten(
            1, (self.num_frames, self.win_length)
        )
        frames = frames * self.window  # [N, F, win]
        y = torch.matmul(frames, self.filterbank[:, 0].t())  # [N, F, 2K]
        re, im = y[..., : self.num_bins], y[..., self.num_bins :]
        power = (re**2 + im**2).transpose(1, 2)  # [N, K, F]
        power = torch.where(power > 0.0, power, torch.full_like(power, self.encoder.log10_eps))
        power = power.unflatten(1, (self.num_bands, self.bins_per_band))
        return torch.log10(power).mul(10.0).to(torch.float32)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, num_samples] or [B, C, num_samples] float (int16 units) -> [B, num_classes] float32."""
        if not isinstance(waveform, torch.Tensor):
            raise TypeError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
        if not waveform.is_floating_point():
            raise TypeError(f"waveform must be float (int16 units), got {waveform.dtype}")
        if waveform.dim() not in (2, 3) or int(waveform.shape[-1]) != self.num_samples:
            raise ValueError(
                f"waveform must be [B, {self.num_samples}] or [B, C, {self.num_samples}], "
                f"got {tuple(waveform.shape)}"
            )
        channels = 1 if waveform.dim() == 2 else int(waveform.shape[1])
        x = waveform.to(torch.float32).reshape(-1, self.num_samples)
        return self.encoder.embed_from_spectrogram(self.spectrogram(x), channels, pool=self._pool)


def fold_audio_encoder(model: ESResNeXtFBSP, num_samples: int) -> AudioEncoderForExport:
    """Fold ``model`` for clips of ``num_samples`` samples (220500 = AudioCLIP's 5 s).

    Returns the folded module in eval mode; the shared ``model`` is put in eval mode too.
    """
    return AudioEncoderForExport(model, num_samples).eval()


def example_waveform(batch: int, num_samples: int, seed: int = 0) -> torch.Tensor:
    """Deterministic test signal [batch, num_samples] float32 in int16 units (tones + noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 44100.0
    rows = []
    for _ in range(batch):
        f0 = rng.uniform(80.0, 4000.0)
        sig = 8000.0 * np.sin(2 * np.pi * f0 * t) + 3000.0 * rng.standard_normal(num_samples)
        rows.append(np.clip(sig, -32768, 32767))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def export_audioclip_audio(
    model: ESResNeXtFBSP,
    path: str | Path,
    num_samples: int,
    *,
    atol: float | None = 1e-4,
    check_analytic: bool = True,
) -> ExportResult:
    """Export the folded audio encoder: input "waveform" [batch, num_samples] float32 (int16 units,
    44.1 kHz) -> output "embedding" [batch, num_classes] float32; dynamic batch, opset 18.

    The parity check runs ORT against the folded module at batch 2 (the trace) and 1; with
    ``check_analytic`` ORT is also compared with the analytic ``model`` (the original form, its
    front end evaluated in float64 as the graph's) at batch 3, recorded as
    ``parity_per_output["embedding_vs_analytic"]``. The check signals are
    broadband (tones + noise): on band-limited audio some bins fall below float32 resolution and
    any two float32 evaluations differ more (see tests/parity/test_esresnext_fbsp.py). Raises RuntimeError if
    either error exceeds ``atol`` (None: no limit). Puts ``model`` in eval mode.
    """
    folded = fold_audio_encoder(model.eval(), num_samples)
    trace_in = example_waveform(2, folded.num_samples, seed=1)
    parity_in = [(example_waveform(1, folded.num_samples, seed=2),)]
    result = export_graph(
        folded,
        (trace_in,),
        path,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=[{0: torch.export.Dim("batch")}],
        parity_inputs=parity_in,
        atol=atol,
    )
    if check_analytic:
        x = example_waveform(3, folded.num_samples, seed=3)
        with torch.no_grad():
            ref = model(x, frontend_dtype=torch.float64).double().numpy()
        got = cpu_session(result.path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        err = float(np.max(np.abs(ref - got.astype(np.float64))))
        result.parity_per_output["embedding_vs_analytic"] = err
        result.parity_max_abs_err = max(result.parity_max_abs_err, err)
        if atol is not None and not err <= atol:
            raise RuntimeError(
                f"{Path(path).name}: ORT differs from the analytic model by {err:.3g} (> {atol:g})"
            )
    return result
