"""One case of ``benchmarks.run`` in its own process: one mode on one side, timed, outputs to npz.

    python -m benchmarks.run_case SPEC.json

``benchmarks.run`` starts this module once per (mode, side) so that the peak RSS of each is that of a
fresh process: its VmHWM, reported here (:func:`peak_rss_mb`; the parent also keeps ``os.wait4``'s
``ru_maxrss``, which on Linux includes the spawning process's RSS). SPEC.json (written by the
parent) names the mode, the side (``reference``: the PyTorch pipelines of ``reference/``;
``runtime``: ``runtime.load(...).segment``), the bundle, threads, repeats / warm-up runs, the inputs
(``frames.npz``: uint8 [F, 224, 224, 3]; a WAV path; ``audioclip_inputs.npz``: the graphs' inputs)
and where to write:

* ``out_json``: ``{"measurement": timing.Measurement.to_dict(), "stages": {stage: [ms per timed
  run]}, "load_s", "peak_rss_mb" (VmHWM at the end: this process's own peak), "info"}``. Stages: the runtime's ``SegmentResult.timings`` (minus
  ``total``); the reference's forward time of its big modules (``audio``, ``image``,
  ``sam_encoder``, ``sam_decoder``; forward hooks), the rest of each run as ``other``.
* ``out_npz``: the last run's outputs, no pickle: ``mask_<i>`` bool [H, W] per frame, or for the
  ``audioclip`` case ``audio_embedding`` [F, D] and ``image_global`` [F, D] float32.

The runtime side never imports torch (its peak RSS is the runtime's alone). Modes: ``audioclip``
(the two AudioCLIP graphs on the clip's preprocessed inputs), ``acfpn``, ``point-global``,
``point-local``, ``point-dense``, ``heatmap-box``, ``no-prompt`` (``params`` passed through, e.g.
``{"grid": "audio"}``), and ``flops`` (reference side only: FLOPs of the encoders, counted on the
meta device).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.probes import status_mb
from benchmarks.timing import measure

POINT_MODES = ("point-global", "point-local", "point-dense", "heatmap-box")


def peak_rss_mb() -> float:
    """This process's peak RSS in MB since it started: VmHWM of /proc/self/status.

    Not ``ru_maxrss``: on Linux that also counts the RSS of the process that spawned this one, as
    it was at exec time (the kernel keeps the old address space's high-water mark across execve).
    Falls back to ``ru_maxrss`` where /proc is absent.
    """
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


def _frames(spec: dict) -> list[np.ndarray]:
    with np.load(spec["frames"], allow_pickle=False) as z:
        arr = z["frames"]
    return [arr[i] for i in range(arr.shape[0])]


def _audioclip_inputs(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    with np.load(spec["audioclip_inputs"], allow_pickle=False) as z:
        return z["waveform"], z["image"]


def _masks_npz(masks) -> dict[str, np.ndarray]:
    return {f"mask_{i}": np.asarray(m, dtype=bool) for i, m in enumerate(masks)}


# --- runtime side (no torch) ---------------------------------------------------------------------


def _runtime_case(spec: dict) -> tuple[Callable[[], tuple[dict, dict]], dict]:
    """(one run -> (stage ms, outputs), info) for the runtime side; sessions created here."""
    import runtime
    from runtime.modes import MODES

    mode = spec["mode"]
    pipe = runtime.load(
        spec["bundle"],
        preset=spec.get("preset"),
        threads=spec["threads"],
        providers=["cpu"],
        cache_mb=0,
        **(spec.get("execution") or {}),
    )
    info: dict[str, Any] = {"preset": pipe.preset.name}
    if mode == "audioclip":
        wav, img = _audioclip_inputs(spec)
        sa, si = pipe.session("audioclip_audio"), pipe.session("audioclip_image")

        def run_graphs():
            st: dict[str, float] = {}
            t0 = time.perf_counter()
            emb = sa.run(None, {"waveform": wav})[0]
            t1 = time.perf_counter()
            glob = si.run(None, {"image": img})[0]
            st["audio"], st["image"] = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
            return st, {
                "audio_embedding": np.asarray(emb, np.float32),
                "image_global": np.asarray(glob, np.float32),
            }

        info["providers"] = {
            g: pipe.session_info[g].provider for g in ("audioclip_audio", "audioclip_image")
        }
        info["precision"] = {
            g: pipe.session_info[g].precision for g in ("audioclip_audio", "audioclip_image")
        }
        info["backends"] = pipe.execution(("audioclip_audio", "audioclip_image"))
        info["agreement"] = pipe._agreement(("audioclip_audio", "audioclip_image"))
        return run_graphs, info
    ms = MODES["no-prompt" if mode == "no-prompt" else mode]
    for g in (*ms.graphs, *ms.optional_graphs):
        if pipe.bundle.has(g):
            pipe.session(g)  # session creation is load time, not the first run's
    if "sam_image_encoder" in ms.graphs:
        pipe.sam_runner(max_batch=spec.get("sam_batch"))
    frames = _frames(spec)[: spec.get("num_frames") or None]
    wav, params = spec["wav"], dict(spec.get("params") or {})

    def run_mode():
        res = pipe.segment(frames, wav, mode=ms.name, **params)
        info["providers"], info["precision"] = dict(res.providers), dict(res.precision)
        info["backends"], info["agreement"] = dict(res.backends), dict(res.agreement)
        return {k: float(v) for k, v in res.timings.items() if k != "total"}, _masks_npz(res.masks)

    return run_mode, info


# --- reference side (PyTorch) --------------------------------------------------------------------


class StageClock:
    """Wall time spent in named methods of torch modules, summed per stage name.

    ``methods``: stage name -> list of (object, method name); each method is replaced on that
    instance by a timed wrapper (``forward`` covers ``module(x)``). Nested calls within one
    stage are counted once (the outermost).
    """

    def __init__(self, methods: dict[str, list[tuple[Any, str]]]):
        self.ms: dict[str, float] = {}
        self._depth: dict[str, int] = {}
        for name, targets in methods.items():
            for obj, meth in targets:
                setattr(obj, meth, self._wrap(name, getattr(obj, meth)))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            depth = self._depth.get(name, 0)
            self._depth[name] = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth[name] = depth
                if depth == 0:
                    self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

        return timed

    def take(self) -> dict[str, float]:
        out, self.ms = self.ms, {}
        return out


def _tower(module) -> list[tuple[Any, str]]:
    return [(module, m) for m in ("forward", "forward_features") if hasattr(module, m)]


def _reference_case(spec: dict) -> tuple[Callable[[], tuple[dict, dict]], dict]:
    """(one run -> (stage ms, outputs), info) for the PyTorch reference side."""
    import torch

    torch.set_num_threads(spec["threads"])
    mode, bundle = spec["mode"], spec["bundle"]
    info: dict[str, Any] = {"torch": torch.__version__}
    if mode == "audioclip":
        from models.audioclip import load_audioclip
        from models.random_init import randomize_batchnorm
        from runtime.bundle import Bundle

        w = Bundle.open(bundle, verify=False).manifest["weights"]["audioclip"]
        model, _ = load_audioclip(
            w.get("path"), config=w["config"], with_text=False, seed=w.get("seed", 0)
        )
        if w.get("source") == "random-init":
            randomize_batchnorm(model, w.get("seed", 0))
        model.eval()
        if spec.get("autocast_bf16"):
            _autocast_bf16(model.visual)
            info["autocast"] = "torch.autocast(cpu, bfloat16): visual tower"
        wav, img = (torch.from_numpy(x) for x in _audioclip_inputs(spec))

        def run_graphs():
            with torch.no_grad():
                t0 = time.perf_counter()
                emb = model.audio(wav)
                t1 = time.perf_counter()
                glob = model.visual.forward_features(img)["global"]
            st = {"audio": (t1 - t0) * 1e3, "image": (time.perf_counter() - t1) * 1e3}
            return st, {
                "audio_embedding": emb.numpy().astype(np.float32),
                "image_global": glob.numpy().astype(np.float32),
            }

        return run_graphs, info
    frames = _frames(spec)[: spec.get("num_frames") or None]
    wav = spec["wav"]
    if mode == "acfpn":
        from reference.acfpn import (
            reference_audio,
            reference_frames,
            reference_logits,
            reference_model,
        )

        model = reference_model(bundle)
        clock = StageClock({"audio": _tower(model.audio), "image": _tower(model.visual)})
        if spec.get("autocast_bf16"):
            _autocast_bf16(model.visual)
            info["autocast"] = "torch.autocast(cpu, bfloat16): visual tower"
        a = spec["acfpn"]

        def run_acfpn():
            z = reference_logits(
                model,
                reference_frames(frames, antialias=a["antialias"]),
                reference_audio(wav, len(frames), input_scale=a["scale"]),
            )
            return clock.take(), _masks_npz([x > 0 for x in z])

        return run_acfpn, info
    from reference.zero_shot import (
        load_reference_models,
        reference_no_prompt,
        reference_point_prompt,
    )

    models = load_reference_models(bundle)
    clock = StageClock(
        {
            "audio": _tower(models.aclp.audio),
            "image": _tower(models.aclp.visual),
            "sam_encoder": _tower(models.sam.image_encoder),
            "sam_decoder": _tower(models.sam.mask_decoder),
        }
    )
    if spec.get("autocast_bf16"):
        _autocast_bf16(models.aclp.visual, models.sam.image_encoder, models.sam.mask_decoder)
        info["autocast"] = "torch.autocast(cpu, bfloat16): visual tower, SAM encoder and decoder"
    preset = spec.get("preset") or "sam4avs"
    info["preset"] = preset
    if mode in POINT_MODES:

        def run_points():
            with torch.no_grad():
                masks = reference_point_prompt(models, frames, wav, strategy=mode, preset=preset)
            return clock.take(), _masks_npz(masks)

        return run_points, info
    if mode == "no-prompt":

        def run_np():
            with torch.no_grad():
                masks = reference_no_prompt(models, frames, wav, preset=preset)[0]
            return clock.take(), _masks_npz(masks)

        return run_np, info
    raise SystemExit(f"run_case: no reference for mode {mode!r}")


def _autocast_bf16(*modules) -> None:
    """Run each module's ``forward`` under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with its
    float outputs cast back to float32 (the torch bf16 side: what a user of the reference could pick
    instead). The AudioCLIP audio tower is left in fp32, as the runtime keeps its audio front end."""
    import torch

    def cast(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.float()
        if isinstance(x, (tuple, list)):
            return type(x)(cast(v) for v in x)
        if isinstance(x, dict):
            return {k: cast(v) for k, v in x.items()}
        return x

    for obj, name in (pair for m in modules for pair in _tower(m)):  # forward, forward_features
        orig = getattr(obj, name)

        def fwd(*a, _orig=orig, **k):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return cast(_orig(*a, **k))

        setattr(obj, name, fwd)


def count_encoder_flops(bundle: str) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one call per item: the SAM image encoder per frame, the
    AudioCLIP audio tower per clip and image tower per frame, for the bundle's configurations.
    Built on the meta device (no weights in memory); a tower that cannot be is left out."""
    import torch

    from benchmarks.flops import count_flops_torch
    from runtime.bundle import Bundle

    b = Bundle.open(bundle, verify=False)
    w = b.manifest["weights"]
    out: dict[str, float] = {}
    if "sam" in w and b.has("sam_image_encoder"):
        from models.sam import build_sam

        size = int(b.manifest["preprocessing"]["sam"]["image_size"])
        with torch.device("meta"):
            sam = build_sam(w["sam"]["config"])
            out["sam_image_encoder"] = float(
                count_flops_torch(sam.image_encoder, (torch.empty(1, 3, size, size),))
            )
    if "audioclip" in w and b.has("audioclip_audio"):
        from models.audioclip import load_audioclip

        t = int(b.graphs["audioclip_audio"]["inputs"][0]["shape"][1])
        cfg = w["audioclip"]["config"]
        with torch.device("meta"):
            model, _ = load_audioclip(None, config=cfg, with_text=False)
            out["audioclip_image"] = float(
                count_flops_torch(model.visual, (torch.empty(1, 3, 224, 224),))
            )
        try:
            with torch.device("meta"):
                out["audioclip_audio"] = float(count_flops_torch(model.audio, (torch.empty(1, t),)))
        except RuntimeError:  # the FBSP front end makes CPU tensors: count on real (random) weights
            model, _ = load_audioclip(None, config=cfg, with_text=False)
            out["audioclip_audio"] = float(count_flops_torch(model.audio, (torch.zeros(1, t),)))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.run_case SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    t0 = time.perf_counter()
    if spec["mode"] == "flops":
        Path(spec["out_json"]).write_text(
            json.dumps({"flops": count_encoder_flops(spec["bundle"])})
        )
        return 0
    make = _reference_case if spec["side"] == "reference" else _runtime_case
    fn, info = make(spec)
    load_s = time.perf_counter() - t0
    stages: list[dict[str, float]] = []
    last: dict[str, dict] = {}

    def call():
        t = time.perf_counter()
        st, outs = fn()
        wall = (time.perf_counter() - t) * 1e3
        st = {k: float(v) for k, v in st.items()}
        rest = wall - sum(st.values())
        if rest > 1.0:  # ms
            st["other"] = st.get("other", 0.0) + rest
        stages.append(st)
        last["outs"] = outs

    m = measure(
        call,
        repeats=int(spec["repeats"]),
        warmup=int(spec["warmup"]),
        label=f"{spec['mode']}/{spec['side']}",
    )
    timed = stages[int(spec["warmup"]) :]
    names = list(dict.fromkeys(k for st in timed for k in st))
    np.savez_compressed(spec["out_npz"], **last["outs"])
    Path(spec["out_json"]).write_text(
        json.dumps(
            {
                "measurement": m.to_dict(),
                "stages": {k: [st.get(k, 0.0) for st in timed] for k in names},
                "load_s": load_s,
                "peak_rss_mb": peak_rss_mb(),
                "info": info,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
