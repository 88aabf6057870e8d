"""The pipeline object: owns the bundle's sessions and runs the segmentation modes.

``Pipeline`` is built by :func:`runtime.load`; sessions are created on first use of a graph (or all at
once with :meth:`Pipeline.warmup`), so loading never touches a GPU a mode does not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.audio import prepare_audioclip_audio, short_clip_policy
from runtime.bundle import Bundle
from runtime.errors import InputError
from runtime.image import FrameLike, clip_preprocess, load_frames, squash_to_square
from runtime.result import SegmentResult
from runtime.result import timed as _timed
from runtime.sessions import SessionInfo, create_session


class Pipeline:
    """A loaded bundle: sessions, preprocessing constants from the manifest, and the modes."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        providers: Sequence[str] | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
        threads: int | None = None,
        preset: str | None = None,
    ):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.preset = bundle.preset(preset)
        self._providers = providers
        self._provider_options = provider_options
        self._threads = threads
        self._sessions: dict[str, Any] = {}
        self.session_info: dict[str, SessionInfo] = {}

    # --- loading -------------------------------------------------------------------------------
    def session(self, graph: str):
        """The onnxruntime session of ``graph``, created on first use."""
        if graph not in self._sessions:
            path = self.bundle.graph_path(graph)
            sess, info = create_session(
                path, graph=graph, providers=self._providers,
                provider_options=self._provider_options, threads=self._threads,
            )
            self._sessions[graph] = sess
            self.session_info[graph] = info
        return self._sessions[graph]

    def warmup(self, graphs: Sequence[str] | None = None) -> dict[str, str]:
        """Create the sessions of ``graphs`` (default: all in the bundle); returns graph -> provider."""
        for g in graphs or list(self.bundle.graphs):
            self.session(g)
        return self.providers()

    def providers(self) -> dict[str, str]:
        """Graph -> the execution provider its session really got."""
        return {g: i.provider for g, i in self.session_info.items()}

    def preset_value(self, key: str, override: Any = None) -> Any:
        """A constant of the active preset, unless ``override`` is given."""
        if override is not None:
            return override
        if key not in self.preset:
            raise InputError(f"preset {self.preset['name']!r} has no constant {key!r}")
        return self.preset[key]

    # --- shared stages -------------------------------------------------------------------------
    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session(graph).run(None, feeds)

    def _input_shape(self, graph: str, index: int = 0) -> list:
        return self.bundle.graphs[graph]["inputs"][index]["shape"]

    def audioclip_audio_input(self, audio, sample_rate: int | None, num_frames: int, *, input_scale: float | None = None,
                              graph: str = "audioclip_audio") -> np.ndarray:
        """The ``audioclip_audio`` graph input for a clip: float32 [F, T] (T from the manifest)."""
        a = self.manifest["preprocessing"]["audio"]
        x = prepare_audioclip_audio(
            audio, sample_rate, num_frames,
            target_rate=int(a["sample_rate"]), chunk_seconds=float(a["chunk_seconds"]),
            tile=int(a["tile"]), input_scale=float(self.preset_value("audio_input_scale", input_scale)),
            short_clip=short_clip_policy(self.preset),
        )
        t = self._input_shape(graph)[1]
        if isinstance(t, int) and x.shape[1] != t:
            raise InputError(f"audio graph was exported for T={t} samples, preprocessing gives {x.shape[1]}")
        return x

    def audio_embeddings(self, audio, sample_rate: int | None, num_frames: int, *, input_scale: float | None = None,
                         graph: str = "audioclip_audio") -> np.ndarray:
        """AudioCLIP embeddings of a clip, one per frame: float32 [F, D] (not normalised)."""
        x = self.audioclip_audio_input(audio, sample_rate, num_frames, input_scale=input_scale, graph=graph)
        return self._run(graph, {"waveform": x})[0]

    def clip_images(self, frames: list[np.ndarray], *, antialias: bool | None = None, squash: bool = False) -> np.ndarray:
        """CLIP-preprocessed frames: float32 [N, 3, S, S] with the manifest's size, mean and std.

        ``squash``: first resize each frame to S x S ignoring its aspect ratio (the AVSBench
        convention, so a dense prediction covers the whole frame); otherwise CLIP's shorter-side
        resize and centre crop.
        """
        im = self.manifest["preprocessing"]["image"]
        size = int(im["size"])
        aa = bool(self.preset_value("image_antialias", antialias))
        if squash:
            frames = [squash_to_square(f, size, antialias=aa) for f in frames]
        return clip_preprocess(frames, size=size, mean=im["mean"], std=im["std"], antialias=aa)

    def image_features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``audioclip_image`` outputs for preprocessed images: global [N, D], dense / surgery_dense [N, D, 7, 7]."""
        names = [o["name"] for o in self.bundle.graphs["audioclip_image"]["outputs"]]
        outs = self._run("audioclip_image", {"image": images})
        return dict(zip(names, outs, strict=True))

    # --- the one call ---------------------------------------------------------------------------
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
        bundle supports). ``params``: mode parameters (thresholds etc.), see ``runtime.modes``.
        """
        from runtime.modes import MODES, default_mode

        mode = mode or default_mode(self.bundle)
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; choose from {sorted(MODES)}")
        spec = MODES[mode]
        missing = [g for g in spec.graphs if not self.bundle.has(g)]
        if missing:
            raise InputError(f"mode {mode!r} needs graphs {missing}, which bundle {self.bundle.root} lacks")
        unknown = set(params) - set(spec.params)
        if unknown:
            raise InputError(f"mode {mode!r} takes parameters {sorted(spec.params)}, not {sorted(unknown)}")
        timings: dict[str, float] = {}
        with _timed(timings, "load_frames"):
            frames = load_frames(frames)
        result = spec.run(self, frames, audio, sample_rate, timings, **{**spec.params, **params})
        result.mode, result.preset = mode, self.preset["name"]
        result.timings = {**timings, "total": sum(timings.values())}
        result.providers = {g: self.session_info[g].provider for g in spec.graphs if g in self.session_info}
        result.random_weights = self.bundle.random_weights
        return result
