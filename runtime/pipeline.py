"""The pipeline object: owns the bundle's sessions, offers the shared stages, runs the modes.

``Pipeline`` is built by :func:`runtime.load`; sessions are created on first use of a graph (or all at
once with :meth:`Pipeline.warmup`), so loading never touches a GPU a mode does not need. Modes
(:mod:`runtime.modes`) use only the public methods below.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.audio import prepare_audioclip_audio, short_clip_policy
from runtime.bundle import Bundle
from runtime.cache import EmbeddingCache, array_key
from runtime.contract import AGREEMENT_FIELDS, GRAPHS, Preset
from runtime.errors import BundleError, InputError
from runtime.image import FrameLike, clip_preprocess, load_frames, squash_to_square
from runtime.memory import (
    CPU_MAX_BATCH,
    GPU_MAX_BATCH,
    encoder_batch,
    encoder_bytes_per_frame,
    mem_available_bytes,
)
from runtime.modes import MODES, ModeSpec, default_mode, get_mode
from runtime.result import FrameOutput, SegmentResult, timed
from runtime.sam import SamRunner
from runtime.sessions import SessionInfo, create_session

__all__ = ["DEFAULT_CACHE_MB", "Pipeline", "SegmentResult"]

DEFAULT_CACHE_MB = 256.0  # embeddings kept per pipeline (a SAM vit_b frame embedding is 4 MiB)


class Pipeline:
    """A loaded bundle: sessions, preprocessing constants from the manifest, and the modes.

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
        graph_runner: Callable[[str], tuple[Any, SessionInfo]] | None = None,
    ):
        self.bundle = bundle
        self._graph_runner = graph_runner
        self.manifest = bundle.manifest
        self.preset: Preset = bundle.preset(preset)
        self._providers = providers
        self._provider_options = provider_options
        self._threads = threads
        self._sessions: dict[str, Any] = {}
        self.session_info: dict[str, SessionInfo] = {}
        self._lock = threading.RLock()
        self._sam: SamRunner | None = None
        self._banks: dict[str, np.ndarray] = {}
        if (
            isinstance(cache_mb, bool)
            or not isinstance(cache_mb, (int, float))
            or not 0 <= cache_mb < 1e7
        ):
            raise InputError(
                f"cache_mb must be a number of MiB >= 0 (0 disables the cache), got {cache_mb!r}"
            )
        self.cache = EmbeddingCache(int(cache_mb * 2**20))
        self._calls = threading.local()  # per-thread cache hits of the running segment call

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
        """An onnxruntime session of ``graph`` in this process, from its checked bytes."""
        return create_session(
            self.bundle.verified_graph(graph),
            graph=graph,
            providers=self._providers,
            provider_options=self._provider_options,
            threads=self._threads,
        )

    def warmup(self, graphs: Sequence[str] | None = None) -> dict[str, str]:
        """Create the sessions of ``graphs`` (default: all in the bundle); returns graph -> provider."""
        for g in graphs or list(self.bundle.graphs):
            self.session(g)
        return self.providers()

    def providers(self) -> dict[str, str]:
        """Graph -> the execution provider its session really got."""
        return {g: i.provider for g, i in self.session_info.items()}

    # --- constants -----------------------------------------------------------------------------
    @property
    def preset_name(self) -> str:
        """The active preset's name."""
        return self.preset.name

    def preset_value(self, key: str, override: Any = None) -> Any:
        """A constant of the active preset (:class:`runtime.contract.Preset`), unless ``override`` is given."""
        if override is not None:
            return override
        if key not in self.preset:
            raise InputError(f"preset {self.preset.name!r} has no constant {key!r}")
        return self.preset[key]

    def section(self, name: str) -> Any:
        """A preprocessing section of the manifest as its typed contract class (``runtime.contract``)."""
        return self.bundle.section(name)

    def graph_input_shape(self, graph: str, index: int = 0) -> list[int | str]:
        """The manifest's shape of input ``index`` of ``graph`` (ints fixed, strings symbolic)."""
        return list(self.bundle.graphs[graph]["inputs"][index]["shape"])

    def bank(self, name: str) -> np.ndarray:
        """A bank of the bundle (``manifest.banks``), loaded once (read-only array)."""
        with self._lock:
            if name not in self._banks:
                banks = self.manifest.get("banks", {})
                if name not in banks:
                    raise InputError(
                        f"bundle {self.bundle.root} has no bank {name!r}; rebuild it with the "
                        "graphs that need it (e.g. the Box-Prompt graphs)"
                    )
                arr = np.load(self.bundle.root / banks[name]["file"], allow_pickle=False)
                arr.setflags(write=False)
                self._banks[name] = arr
            return self._banks[name]

    def label_names(self, name: str) -> list[str]:
        """A label list of the bundle (``manifest.labels.<name>.names``), in bank order."""
        entry = self.manifest.get("labels", {}).get(name)
        if not entry:
            raise InputError(
                f"bundle {self.bundle.root} has no label list {name!r} (manifest labels.{name})"
            )
        return list(entry["names"])

    # --- shared stages -------------------------------------------------------------------------
    def run(self, graph: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run ``graph`` on its inputs, given positionally in the contract's order (``runtime.contract.GRAPHS``).

        Returns its outputs in the contract's order (arrays as the graph makes them).
        """
        spec = GRAPHS[graph]
        if len(inputs) != len(spec.inputs):
            raise InputError(
                f"graph {graph!r} takes {len(spec.inputs)} inputs {list(spec.input_names)}, "
                f"got {len(inputs)}"
            )
        feeds = dict(zip(spec.input_names, inputs, strict=True))
        return self.session(graph).run(list(spec.output_names), feeds)

    def audioclip_audio_input(
        self,
        audio,
        sample_rate: int | None,
        num_frames: int,
        *,
        input_scale: float | None = None,
        graph: str = "audioclip_audio",
    ) -> np.ndarray:
        """The ``audioclip_audio`` graph input for a clip: float32 [F, T] (T from the manifest).

        audio: WAV path, or an array (see :func:`runtime.audio.load_audio`) with ``sample_rate`` in Hz;
        frame k gets second k. input_scale: the waveform multiplier (None: the preset's).
        """
        a = self.section("audio")
        x = prepare_audioclip_audio(
            audio,
            sample_rate,
            num_frames,
            target_rate=a.sample_rate,
            chunk_seconds=a.chunk_seconds,
            tile=a.tile,
            input_scale=float(self.preset_value("audio_input_scale", input_scale)),
            short_clip=short_clip_policy(self.preset),
        )
        t = self.graph_input_shape(graph)[1]
        if isinstance(t, int) and x.shape[1] != t:
            raise InputError(
                f"audio graph was exported for T={t} samples, preprocessing gives {x.shape[1]}"
            )
        return x

    def audio_embeddings(
        self,
        audio,
        sample_rate: int | None,
        num_frames: int,
        *,
        input_scale: float | None = None,
        graph: str = "audioclip_audio",
    ) -> np.ndarray:
        """AudioCLIP embeddings of a clip, one per frame: float32 [F, D] (not normalised)."""
        x = self.audioclip_audio_input(
            audio, sample_rate, num_frames, input_scale=input_scale, graph=graph
        )
        return self.run(graph, x)[0]

    def clip_images(
        self, frames: list[np.ndarray], *, antialias: bool | None = None, squash: bool = False
    ) -> np.ndarray:
        """CLIP-preprocessed frames: float32 [N, 3, S, S] with the manifest's size, mean and std.

        frames: uint8 [H, W, 3] RGB. ``squash``: first resize each frame to S x S ignoring its aspect
        ratio (the AVSBench convention, so a dense prediction covers the whole frame); otherwise
        CLIP's shorter-side resize and centre crop. antialias: None = the preset's.
        """
        im = self.section("image")
        aa = bool(self.preset_value("image_antialias", antialias))
        if squash:
            frames = [squash_to_square(f, im.size, antialias=aa) for f in frames]
        return clip_preprocess(
            frames, size=im.size, mean=list(im.mean), std=list(im.std), antialias=aa
        )

    def _cached(self, graph: str, items: Sequence[np.ndarray], compute) -> list:
        """Per-item results of ``compute(missing items) -> list`` through the embedding cache."""
        if not self.cache.max_bytes:  # cache off: no hashing, no copies
            return list(compute(list(items)))
        keys = [array_key(graph, x) for x in items]
        got = [self.cache.get(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        hits = len(items) - len(todo)
        self._calls.hits = getattr(self._calls, "hits", 0) + hits
        if todo:
            for i, value in zip(todo, compute([items[i] for i in todo]), strict=True):
                self.cache.put(keys[i], value)
                got[i] = value
        return got

    def image_features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``audioclip_image`` outputs for preprocessed images float32 [N, 3, S, S], keyed by output name
        (``runtime.contract.IMAGE_GLOBAL`` [N, D], ``IMAGE_DENSE`` / ``IMAGE_SURGERY_DENSE`` [N, D, g, g]).
        Each image's outputs are cached (``Pipeline.cache``) by the hash of its bytes."""
        names = GRAPHS["audioclip_image"].output_names
        if not self.cache.max_bytes:
            return dict(zip(names, self.run("audioclip_image", images), strict=True))

        def compute(batch: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            outs = self.run("audioclip_image", np.stack(batch))
            return [
                {n: o[j : j + 1].copy() for n, o in zip(names, outs, strict=True)}
                for j in range(len(batch))
            ]

        per = self._cached("audioclip_image", list(np.asarray(images)), compute)
        return {n: np.concatenate([p[n] for p in per]) for n in names}

    def sam_runner(self, *, max_batch: int | None = None) -> SamRunner:
        """The pipeline's :class:`runtime.sam.SamRunner` (SAM sessions + ``preprocessing.sam``), built once.

        max_batch: frames per encoder call. Default: by available memory (:mod:`runtime.memory`): the
        largest batch up to the provider's cap (GPU 5, an AVSBench clip; CPU 1, where batching gains no
        speed) whose activations (the manifest's measured bytes per frame) fit in half of
        ``MemAvailable``. Given on a later call it changes the runner's batch.
        """
        if max_batch is not None and (
            isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
        ):
            raise InputError(f"max_batch must be a positive int, got {max_batch!r}")
        with self._lock:
            if self._sam is None:
                sam = self.section("sam")
                enc = self.session("sam_image_encoder")
                self._sam = SamRunner(
                    enc,
                    self.session("sam_prompt_decoder"),
                    sam.image_size,
                    sam.pixel_mean,
                    sam.pixel_std,
                    patch_size=sam.patch_size,
                    mask_threshold=sam.mask_threshold,
                    max_batch=max_batch or self.default_sam_batch(),
                    point_decoder=self.session("sam_point_decoder")
                    if self.bundle.has("sam_point_decoder")
                    else None,
                )
            elif max_batch is not None:
                self._sam.max_batch = max_batch
            return self._sam

    def default_sam_batch(self) -> int:
        """The encoder batch :meth:`sam_runner` picks by default (see there); reads /proc/meminfo now."""
        gpu = self.session_info["sam_image_encoder"].provider != "CPUExecutionProvider"
        per_frame = encoder_bytes_per_frame(self.bundle.graphs["sam_image_encoder"])
        return encoder_batch(
            per_frame, mem_available_bytes(), cap=GPU_MAX_BATCH if gpu else CPU_MAX_BATCH
        )

    def sam_embeddings(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """SAM image embeddings of uint8 [H, W, 3] RGB frames: one float32 [1, C, g, g] per frame (read-only),
        computed once per frame while it stays in the pipeline's cache (keyed by the frame's bytes)."""
        runner = self.sam_runner()
        return self._cached("sam_image_encoder", list(frames), lambda fs: runner.embed(fs))

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
        timings: dict[str, float] = {}
        self._calls.hits = 0
        with timed(timings, "load_frames"):
            frames = load_frames(frames)
        outputs = spec.run(self, frames, audio, sample_rate, timings, **values)
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
            precision={g: str(self.bundle.graphs[g].get("precision", "fp32")) for g in used},
            agreement={
                g: {k: self.bundle.graphs[g]["agreement"][k] for k in AGREEMENT_FIELDS}
                for g in used
                if "agreement" in self.bundle.graphs[g]
            },
            cache_hits=self._calls.hits,
        )

    def segment_video(self, path: str | Path, **kwargs: Any):
        """Segment a video file (frames and audio track from the file), window by window.

        Thin wrapper of :func:`runtime.video.segment_video` (see it for ``mode``, ``sampling``
        ("avsbench" | "fps"), ``fps``, ``start``, ``duration``, ``audio``, ``progress`` and mode
        parameters); returns a :class:`runtime.video.VideoSegmentResult`. Needs PyAV.
        """
        from runtime.video import segment_video

        return segment_video(self, path, **kwargs)
