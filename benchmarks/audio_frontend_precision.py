"""How exactly the exported AudioCLIP audio front end follows the analytic one (issue 11, fidelity 2).

    python -m benchmarks.audio_frontend_precision                      # tiny config, 5-s clips
    python -m benchmarks.audio_frontend_precision --config audioclip   # full-size trunk (slower)

On every WAV of ``../shared/data/audioclip-demo`` (first 5 s, zero-padded when shorter), with a
RANDOM-weight ESResNeXt-FBSP whose stem conv is drawn at gain 1 (N(0, 1 / fan_in)) and seeded
random BatchNorm statistics, at both input scales (x32768: AudioCLIP's int16 units; x1: the
``sam4avs`` preset), prints:

- the max |dB| between the exported front end (onnxruntime) and the analytic front end in float64
  (``ESResNeXtFBSP.spectrogram(x, torch.float64)``), and how far the analytic float32 front end is
  from it (the rounding noise of float32 in the lowest bins);
- the max abs embedding difference: exported tower (onnxruntime) vs the analytic model with its
  float64 front end, and vs the analytic model in float32.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

from export.audioclip_audio import export_audioclip_audio, fold_audio_encoder
from export.onnx_utils import cpu_session, export_graph
from models.esresnext_fbsp import ESResNeXtFBSP
from models.random_init import randomize_batchnorm
from models.registry import get_config

REPO = Path(__file__).resolve().parents[1]
SR = 44100


def _read(path: Path, n: int) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != SR or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit {SR} Hz")
        d = (
            np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            .reshape(-1, w.getnchannels())
            .mean(1)
        )
    a = (d / 32768.0).astype(np.float32)
    return np.pad(a, (0, max(0, n - a.size)))[:n]


class _FrontEnd(torch.nn.Module):
    def __init__(self, folded):
        super().__init__()
        self.folded = folded

    def forward(self, waveform):
        return self.folded.spectrogram(waveform)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="audioclip-tiny")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "audioclip-demo")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    n = int(round(a.seconds * SR))
    wavs = sorted(a.data.glob("*.wav"))
    x = np.stack([_read(w, n) for w in wavs])
    torch.manual_seed(0)
    m = ESResNeXtFBSP(**get_config(a.config)["audio"])
    with torch.no_grad():
        m.conv1.weight.normal_(0.0, 1.0 / math.sqrt(m.conv1.weight[0].numel()))  # stem at gain 1
    randomize_batchnorm(m, 1)
    m.eval()
    with tempfile.TemporaryDirectory() as d:
        res = export_audioclip_audio(m, Path(d) / "audio.onnx", n, atol=None)
        tower = cpu_session(res.path, threads=2)
        fe = export_graph(
            _FrontEnd(fold_audio_encoder(m, n)).eval(),
            (torch.zeros(2, n),),
            Path(d) / "fe.onnx",
            input_names=["waveform"],
            output_names=["spec"],
            dynamic_shapes=[{0: torch.export.Dim("batch")}],
            parity_inputs=[],
            atol=None,
        )
        front = cpu_session(fe.path, threads=2)
        print(
            f"{len(wavs)} WAVs x {a.seconds:g} s, config {a.config} (RANDOM weights, stem conv at gain 1)"
        )
        for scale in (32768.0, 1.0):
            xs = x * np.float32(scale)
            t = torch.from_numpy(xs)
            with torch.no_grad():
                s64 = m.spectrogram(t, torch.float64).double().numpy()
                s32 = m.spectrogram(t).double().numpy()
                e64 = m(t, frontend_dtype=torch.float64).double().numpy()
                e32 = m(t).double().numpy()
            so = front.run(["spec"], {"waveform": xs})[0].astype(np.float64)
            eo = tower.run(["embedding"], {"waveform": xs})[0].astype(np.float64)
            low = np.mean(s64 < s64.max(axis=(1, 2, 3), keepdims=True) - 100)
            print(f"x{scale:g}: {100 * low:.1f} % of bins > 100 dB below their clip's peak")
            print(
                f"  front end, max |dB| vs analytic float64: exported {np.abs(so - s64).max():.3g}, "
                f"analytic float32 {np.abs(s32 - s64).max():.3g} "
                f"({100 * np.mean(np.abs(s32 - s64) > 1e-3):.1f} % of bins > 1e-3 dB)"
            )
            print(
                f"  embedding, max abs (|e| max {np.abs(e64).max():.3g}): exported vs analytic(float64 front end) "
                f"{np.abs(eo - e64).max():.3g}; exported vs analytic float32 {np.abs(eo - e32).max():.3g}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
