"""The pipeline object: owns the bundle's sessions and stages, runs the modes.

``Pipeline`` is built by :func:`runtime.load`; sessions are created on first use of a graph (or all at
once with :meth:`Pipeline.warmup`), so loading never touches a GPU a mode does not need. Modes
(:mod:`runtime.modes`) never see the pipeline: each receives the stages it declares
(:mod:`runtime.stages`), which run graphs through :meth:`Pipeline.run`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime._cache import EmbeddingCache
from runtime.backends import SessionInfo
from runtime.backends.calibration import calibration_feeds
from runtime.backends.execution import open_session, resolve_backend
from runtime.backends.precision import BACKENDS, PRECISIONS, Gate, check_choice, choose_precision
from runtime.budget import DEFAULT_BUDGET, Budget, checkpoint, deadline
from runtime.bundle import Bundle
from runtime.bundle.contract import AGREEMENT_FIELDS, GRAPHS, Preset
from runtime.errors import BundleError, InputError
from runtime.modes import MODES, ModeSpec, default_mode, get_mode
from runtime.preprocess.image import FrameLike, load_frames
from runtime.result import FrameOutput, SegmentResult, timed
from runtime.sam.predictor import SamRunner
from runtime.stages import StageContext, Stages, StageSet
from runtime.stages.box import label_names

__all__ = ["DEFAULT_CACHE_MB", "Pipeline", "SegmentResult"]

DEFAULT_CACHE_MB = 256.0  # embeddings kept per pipeline (a SAM vit_b frame embedding is 4 MiB)


class Pipeline:
    """A loaded bundle: sessions, preprocessing constants from the manifest, stages and the modes.

    ``graph_runner``: who runs the graphs. None (default): onnxruntime sessions in this process, made
    from the bundle's checked bytes. Otherwise a callable ``graph name -> (session-like, SessionInfo)``
    whose object answers ``get_inputs()``, ``get_outputs()`` (``.name``, ``.shape``) and
    ``run(output_names, feeds)`` as an ``InferenceSession`` does: e.g. the Triton BLS pipeline
    (:mod:`runtime.serving.composed`) sends every graph call to a per-graph model, and everything
    else (preprocessing, prompts, AMG, post-processing) runs this same code.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        providers: Sequence[str] | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
        threads: int | None = None,
        preset: str | None = None,
        cache_mb: float = DEFAULT_CACHE_MB,
        budget: Budget | None = None,
        backend: str | None = None,
        precision: str | None = None,
        cache_dir: str | Path | None = None,
        gate: Gate | None = None,
        calibration_dir: str | Path | None = None,
        graph_runner: Callable[[str], tuple[Any, SessionInfo]] | None = None,
    ):
        if budget is not None and not isinstance(budget, Budget):
            raise InputError(f"budget must be a runtime.budget.Budget, got {type(budget).__name__}")
        self.budget: Budget = budget or DEFAULT_BUDGET  # bounds of one segment call
        self.bundle = bundle
        # None: $AVS_BACKEND / $AVS_PRECISION, else "auto" (the test suite pins onnxruntime fp32 so)
        backend = backend if backend is not None else os.environ.get("AVS_BACKEND") or "auto"
        precision = (
            precision if precision is not None else os.environ.get("AVS_PRECISION") or "auto"
        )
        self.backend = check_choice("backend", backend, BACKENDS)
        self.precision = check_choice("precision", precision, PRECISIONS)
        # refused here, before any session: an impossible backend, bf16 on a CPU without bf16
        be = resolve_backend(self.backend, providers)
        if self.precision == "bf16":
            choose_precision("bf16", graph="(any)", backend=be)
        if gate is not None and not isinstance(gate, Gate):
            raise InputError(
                f"gate must be a runtime.backends.precision.Gate, got {type(gate).__name__}"
            )
        self._gate = gate
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._calibration_dir = calibration_dir
        self._graph_runner = graph_runner
        self.manifest = bundle.manifest
        self.preset: Preset = bundle.preset(preset)
        self._providers = providers
        self._provider_options = provider_options
        self._threads = threads
        self._sessions: dict[str, Any] = {}
        self.session_info: dict[str, SessionInfo] = {}
        self._lock = threading.RLock()
        if (
            isinstance(cache_mb, bool)
            or not isinstance(cache_mb, (int, float))
            or not 0 <= cache_mb < 1e7
        ):
            raise InputError(
                f"cache_mb must be a number of MiB >= 0 (0 disables the cache), got {cache_mb!r}"
            )
        self.cache = EmbeddingCache(int(cache_mb * 2**20))
        self._ctx = StageContext(
            bundle=bundle,
            preset=self.preset,
            run=self.run,
            device=lambda g: (self.session(g), self.session_info[g].device)[1],
            cache=self.cache,
        )
        self._stages = StageSet(self._ctx, self.session)

    # --- loading -------------------------------------------------------------------------------
    def session(self, graph: str):
        """The onnxruntime session of ``graph``, created on first use (thread-safe: one per graph).

        The session is made from the bytes that were checked against the manifest's sha256, and its
        inputs and outputs are checked against the contract; a broken or swapped graph is refused
        with a BundleError naming it.
        """
        with self._lock:
            if graph in self._sessions:
                return self._sessions[graph]
            try:
                if self._graph_runner is not None:
                    sess, info = self._graph_runner(graph)
                else:
                    sess, info = self._local_session(graph)
            except Exception as e:  # onnxruntime raises its own types for a damaged model
                if type(e).__module__.startswith("onnxruntime"):
                    raise BundleError(
                        f"graph {graph!r} of bundle {self.bundle.root} cannot be loaded by "
                        f"onnxruntime ({type(e).__name__}: {str(e)[:300]}); rebuild the bundle"
                    ) from e
                raise
            spec = GRAPHS[graph]
            got_in = [i.name for i in sess.get_inputs()]
            got_out = [o.name for o in sess.get_outputs()]
            if got_in != list(spec.input_names) or not set(spec.output_names) <= set(got_out):
                raise BundleError(
                    f"graph {graph!r} of bundle {self.bundle.root} takes {got_in} and gives "
                    f"{got_out}; the contract says {list(spec.input_names)} -> "
                    f"{list(spec.output_names)}: wrong or swapped file; rebuild the bundle"
                )
            self._sessions[graph] = sess
            self.session_info[graph] = info
            return sess

    def _local_session(self, graph: str):
        """A session of ``graph`` in this process (the chosen backend and precision), made from its
        checked bytes and external data (:meth:`runtime.bundle.Bundle.verified_graph`)."""
        entry = self.bundle.graphs[graph]
        return open_session(
            self.bundle.verified_graph(graph),
            graph=graph,
            sha256=entry["sha256"],
            stored_precision=str(entry.get("precision", "fp32")),
            backend=self.backend,
            precision=self.precision,
            preset=self.preset.name,
            providers=self._providers,
            provider_options=self._provider_options,
            threads=self._threads,
            cache_dir=self._cache_dir,
            gate=self._gate,
            calibration=lambda: calibration_feeds(self, graph, self._calibration_dir),
        )

    def warmup(self, graphs: Sequence[str] | None = None) -> dict[str, str]:
        """Create the sessions of ``graphs`` (default: all in the bundle); returns graph -> provider."""
        for g in graphs or list(self.bundle.graphs):
            self.session(g)
        return self.providers()

    def providers(self) -> dict[str, str]:
        """Graph -> the execution provider its session really got."""
        return {g: i.provider for g, i in self.session_info.items()}

    def execution(self, graphs: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
        """Graph -> ``{"backend", "device", "precision"}`` of its session (the sessions made so far,
        or those of ``graphs`` that exist)."""
        return {
            g: {"backend": i.backend, "device": i.device, "precision": i.precision}
            for g, i in self.session_info.items()
            if graphs is None or g in graphs
        }

    # --- constants -----------------------------------------------------------------------------
    def preset_value(self, key: str, override: Any = None) -> Any:
        """A constant of the active preset (:class:`runtime.bundle.contract.Preset`), unless ``override`` is given."""
        return self._ctx.preset_value(key, override)

    def section(self, name: str) -> Any:
        """A preprocessing section of the manifest as its typed contract class (``runtime.bundle.contract``)."""
        return self.bundle.section(name)

    def graph_input_shape(self, graph: str, index: int = 0) -> list[int | str]:
        """The manifest's shape of input ``index`` of ``graph`` (ints fixed, strings symbolic)."""
        return self._ctx.graph_input_shape(graph, index)

    def bank(self, name: str) -> np.ndarray:
        """A bank of the bundle (``manifest.banks``), loaded once (read-only array)."""
        with self._lock:
            return self._stages.banks(name)

    def label_names(self, name: str) -> list[str]:
        """A label list of the bundle (``manifest.labels.<name>.names``), in bank order."""
        return label_names(self._ctx, name)

    # --- graphs and stages -----------------------------------------------------------------------
    def run(self, graph: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run ``graph`` on its inputs, given positionally in the contract's order (``runtime.bundle.contract.GRAPHS``).

        Returns its outputs in the contract's order (arrays as the graph makes them).
        """
        spec = GRAPHS[graph]
        if len(inputs) != len(spec.inputs):
            raise InputError(
                f"graph {graph!r} takes {len(spec.inputs)} inputs {list(spec.input_names)}, "
                f"got {len(inputs)}"
            )
        feeds = dict(zip(spec.input_names, inputs, strict=True))
        checkpoint(f"graph {graph}")
        return self.session(graph).run(list(spec.output_names), feeds)

    def stages(self, names: Sequence[str] | None = None) -> Stages:
        """The pipeline's stages (:mod:`runtime.stages`) as a mode sees them: ``names`` (default all)."""
        return self._stages.view(names)

    def audioclip_audio_input(
        self, audio, sample_rate: int | None, num_frames: int, **kw
    ) -> np.ndarray:
        """:meth:`runtime.stages.audio.AudioStage.inputs`: float32 [F, T] for ``audioclip_audio``."""
        return self._stages.get("audio").inputs(audio, sample_rate, num_frames, **kw)

    def audio_embeddings(self, audio, sample_rate: int | None, num_frames: int, **kw) -> np.ndarray:
        """:meth:`runtime.stages.audio.AudioStage.embeddings`: float32 [F, D], one per frame."""
        return self._stages.get("audio").embeddings(audio, sample_rate, num_frames, **kw)

    def clip_images(self, frames: list[np.ndarray], **kw) -> np.ndarray:
        """:meth:`runtime.stages.image.ImageStage.clip_images`: float32 [N, 3, S, S]."""
        return self._stages.get("image").clip_images(frames, **kw)

    def image_features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`runtime.stages.image.ImageStage.features`: ``audioclip_image`` outputs by name (cached)."""
        return self._stages.get("image").features(images)

    def sam_runner(self, *, max_batch: int | None = None) -> SamRunner:
        """:meth:`runtime.stages.sam.SamStage.runner`: the SAM runner, built once (``max_batch``: frames
        per encoder call; default by available memory, :meth:`default_sam_batch`)."""
        return self._stages.get("sam").runner(max_batch=max_batch)

    def default_sam_batch(self) -> int:
        """:meth:`runtime.stages.sam.SamStage.default_batch` (reads /proc/meminfo now)."""
        return self._stages.get("sam").default_batch()

    def sam_embeddings(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`runtime.stages.sam.SamStage.embeddings`: one float32 [1, C, g, g] per frame (cached)."""
        return self._stages.get("sam").embeddings(frames)

    # --- the one call ---------------------------------------------------------------------------
    def check_mode(
        self, mode: str | None, params: Mapping[str, Any]
    ) -> tuple[ModeSpec, dict[str, Any]]:
        """The mode ``segment`` would run (None: the bundle's best) and every parameter value, checked
        against the bundle's graphs and the mode's declared types and ranges; InputError otherwise.
        Costs no inference: callers use it to refuse bad input before decoding or loading anything."""
        mode = mode or default_mode(self.bundle)
        if not isinstance(mode, str):
            raise InputError(f"mode must be a string, one of {sorted(MODES)}; got {mode!r}")
        spec = get_mode(mode)
        missing = [g for g in spec.graphs if not self.bundle.has(g)]
        if missing:
            raise InputError(
                f"mode {mode!r} needs graphs {missing}, which bundle {self.bundle.root} lacks"
            )
        return spec, spec.check_params(params)

    def segment(
        self,
        frames: Sequence[FrameLike] | np.ndarray,
        audio: np.ndarray | str | Path,
        sample_rate: int | None = None,
        *,
        mode: str | None = None,
        **params: Any,
    ) -> SegmentResult:
        """Masks of the sounding object in every frame.

        ``frames``: N frames (uint8 RGB [H, W, 3] arrays or image paths; sizes may differ).
        ``audio``: the clip's audio as a WAV path, or an array with ``sample_rate`` (Hz); frame k gets
        second k of the audio. ``mode``: one of :data:`runtime.modes.MODES` (default: the first the
        bundle supports). ``params``: mode parameters, checked against the mode's declared types and
        ranges before any work starts (``avs modes --bundle B`` lists them).
        """
        spec, values = self.check_mode(mode, params)
        mode = spec.name
        budget = self.budget
        budget.check_params(mode, values)
        budget.check_frame_inputs(frames)
        budget.check_audio(audio, sample_rate)
        timings = self._ctx.begin_call()
        with deadline(budget.deadline_s):
            with timed(timings, "load_frames"):
                frames = load_frames(frames)
            outputs = spec.run(self.stages(spec.stages), frames, audio, sample_rate, **values)
        if len(outputs) != len(frames) or not all(isinstance(o, FrameOutput) for o in outputs):
            raise RuntimeError(
                f"mode {mode!r} returned {len(outputs)} outputs for {len(frames)} frames"
            )
        used = [g for g in (*spec.graphs, *spec.optional_graphs) if g in self.session_info]
        return SegmentResult.from_frames(
            mode,
            self.preset.name,
            outputs,
            timings={**timings, "total": sum(timings.values())},
            providers={g: self.session_info[g].provider for g in used},
            random_weights=self.bundle.random_weights,
            precision={g: self.session_info[g].precision for g in used},
            agreement=self._agreement(used),
            backends=self.execution(used),
            cache_hits=self._ctx.cache_hits,
        )

    def _agreement(self, graphs: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per graph not in fp32, or gated: the build-time agreement (int8) or the gate verdict."""
        out: dict[str, dict[str, Any]] = {}
        for g in graphs:
            gate = self.session_info[g].gate
            if gate is not None:
                out[g] = {
                    "cosine_min": gate["cosine_min"],
                    "max_abs": gate["max_abs"],
                    "inputs": gate["inputs"],
                    "mask_iou_min": gate["mask_iou_min"],
                    "gate": "passed" if gate["passed"] else "failed: fp32 kept",
                    "tried": gate["precision"],
                    "reason": gate["reason"],
                }
            elif "agreement" in self.bundle.graphs[g]:
                a = self.bundle.graphs[g]["agreement"]
                out[g] = {k: a[k] for k in AGREEMENT_FIELDS} | {"gate": "build"}
        return out

    def segment_video(self, path: str | Path, **kwargs: Any):
        """Segment a video file (frames and audio track from the file), window by window.

        Thin wrapper of :func:`runtime.media.video.segment_video` (see it for ``mode``, ``sampling``
        ("avsbench" | "fps"), ``fps``, ``start``, ``duration``, ``audio``, ``progress`` and mode
        parameters); returns a :class:`runtime.media.video.VideoSegmentResult`. Needs PyAV.
        """
        from runtime.media.video import segment_video

        return segment_video(self, path, **kwargs)
