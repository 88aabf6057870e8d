"""The SAM stage: which frames SAM sees (frame policy, patch-size check: once per call), the encoder's
embeddings (cached, batched by available memory), and the prompt decoder and automatic mask generator
on the runner. The sessions are created when an embedding or a decoder is first needed, never to
check an input."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from runtime.backends._memory import (
    CPU_MAX_BATCH,
    GPU_MAX_BATCH,
    encoder_batch,
    encoder_bytes_per_frame,
    mem_available_bytes,
)
from runtime.errors import InputError
from runtime.preprocess.image import squash_to_square
from runtime.sam.amg import AmgConfig, AutomaticMaskGenerator
from runtime.sam.predictor import SamRunner
from runtime.stages._context import StageContext

FRAME_POLICIES = ("native", "reference")


class SamStage:
    """SAM on the bundle's ``sam_image_encoder`` and decoders. Frames: uint8 [H, W, 3] RGB."""

    name = "sam"

    def __init__(self, ctx: StageContext, sessions):
        """sessions: ``sessions(graph) -> session`` (the pipeline's, created on first use)."""
        self.ctx = ctx
        self._sessions = sessions
        self._runner: SamRunner | None = None
        self._lock = threading.Lock()

    @property
    def patch_size(self) -> int:
        """SAM's patch size in pixels (manifest ``preprocessing.sam.patch_size``)."""
        return int(self.ctx.section("sam").patch_size)

    def check_frames(self, frames: Sequence[np.ndarray], why: str) -> None:
        """Refuse frames with a side below SAM's patch size (``why`` names what needs them)."""
        patch = self.patch_size
        for i, f in enumerate(frames):
            if f.shape[0] < patch or f.shape[1] < patch:
                raise InputError(
                    f"frame {i} is {f.shape[0]}x{f.shape[1]} px: {why} needs both sides >= "
                    f"the SAM patch size ({patch} px); upscale the frame, or use the "
                    "'reference' frame policy (SAM on the frame squashed to 224x224)"
                )

    def frames(self, frames: Sequence[np.ndarray], policy: str, why: str) -> list[np.ndarray]:
        """The frames SAM sees under a frame ``policy``: each squashed to CLIP's S x S ("reference",
        as the reference code), or the frames themselves ("native"), which must have both sides >=
        SAM's patch size (``why`` names the caller in the error). Call it once, before heavy work."""
        if policy not in FRAME_POLICIES:
            raise InputError(f"frame_policy must be one of {FRAME_POLICIES}, got {policy!r}")
        if policy == "reference":
            s = self.ctx.section("image").size
            aa = bool(self.ctx.preset.image_antialias)
            return [squash_to_square(f, s, antialias=aa) for f in frames]
        self.check_frames(frames, why)
        return list(frames)

    def runner(self, *, max_batch: int | None = None) -> SamRunner:
        """The :class:`runtime.sam.predictor.SamRunner` (SAM sessions + ``preprocessing.sam``), built once.

        max_batch: frames per encoder call. Default: by available memory (:meth:`default_batch`).
        Given on a later call it changes the runner's batch.
        """
        if max_batch is not None and (
            isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
        ):
            raise InputError(f"max_batch must be a positive int, got {max_batch!r}")
        with self._lock:
            if self._runner is None:
                sam = self.ctx.section("sam")
                bundle = self.ctx.bundle
                self._runner = SamRunner(
                    self._sessions("sam_image_encoder"),
                    self._sessions("sam_prompt_decoder"),
                    sam.image_size,
                    sam.pixel_mean,
                    sam.pixel_std,
                    patch_size=sam.patch_size,
                    mask_threshold=sam.mask_threshold,
                    max_batch=max_batch or self.default_batch(),
                    point_decoder=self._sessions("sam_point_decoder")
                    if bundle.has("sam_point_decoder")
                    else None,
                    iou_first=(
                        lambda: (
                            self._sessions("sam_point_iou"),
                            self._sessions("sam_mask_upscaler"),
                        )
                    )
                    if bundle.has("sam_point_iou") and bundle.has("sam_mask_upscaler")
                    else None,
                )
            elif max_batch is not None:
                self._runner.max_batch = max_batch
            return self._runner

    def default_batch(self) -> int:
        """The encoder batch :meth:`runner` picks by default: the largest up to the provider's cap
        (GPU 5, an AVSBench clip; CPU 1, where batching gains no speed) whose activations (the
        manifest's measured bytes per frame) fit in half of ``MemAvailable`` (read now)."""
        gpu = self.ctx.device("sam_image_encoder") in ("cuda", "tensorrt")
        per_frame = encoder_bytes_per_frame(self.ctx.bundle.graphs["sam_image_encoder"])
        return encoder_batch(
            per_frame, mem_available_bytes(), cap=GPU_MAX_BATCH if gpu else CPU_MAX_BATCH
        )

    def embeddings(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """SAM image embeddings: one float32 [1, C, g, g] per frame (read-only), computed once per frame
        while it stays in the cache (keyed by the frame's bytes). Timed "sam_encoder"."""
        with self.ctx.timed("sam_encoder"):
            if not len(frames):
                return []
            runner = self.runner()
            return self.ctx.cached("sam_image_encoder", list(frames), lambda fs: runner.embed(fs))

    def predict(self, embedding, hw, coords=None, labels=None, boxes=None, **kw):
        """:meth:`SamRunner.predict` (masks, iou, low-res logits), timed "sam_decoder"."""
        with self.ctx.timed("sam_decoder"):
            return self.runner().predict(embedding, hw, coords, labels, boxes, **kw)

    def box_masks(
        self, embedding: np.ndarray, frame_hw: tuple[int, int], boxes_xyxy: np.ndarray
    ) -> np.ndarray:
        """Union of SAM's single-mask outputs for every box: bool [H, W]. Timed "sam_decoder".

        boxes_xyxy: float [K, 4] (x0, y0, x1, y1) pixels of the frame (may extend past its edges, as
        GroundingDINO's do; SAM takes them unclipped, as the reference). All K boxes go through one
        decoder call (the runner chunks only at its own prompt-set limit). K = 0 gives all False.
        """
        h, w = frame_hw
        b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        out = np.zeros((h, w), bool)
        if b.shape[0] == 0:
            return out
        with self.ctx.timed("sam_decoder"):
            runner = self.runner()
            _, low = runner.predict_low_res(
                embedding, (h, w), boxes=b, multimask_output=False, boxes_inside=False
            )
            buf = np.empty((h, w), bool)
            for i in range(b.shape[0]):  # one box at a time keeps the full-size logits small
                out |= runner.upscale(low[i, 0], (h, w), out=buf)
        return out

    def amg_config(self, amg: dict[str, Any] | None) -> AmgConfig:
        """SAM's automatic-mask-generator defaults with ``amg`` overrides (fields of :class:`AmgConfig`);
        checks only, no session."""
        names = {f.name for f in fields(AmgConfig)}
        unknown = sorted(set(amg or {}) - names)
        if unknown:
            raise InputError(f"unknown AMG parameters {unknown}; known: {sorted(names)}")
        return AmgConfig(
            **{"mask_threshold": self.ctx.section("sam").mask_threshold, **(amg or {})}
        )

    def generate(
        self, frame: np.ndarray, embedding: np.ndarray, config: AmgConfig, **kw
    ) -> list[dict]:
        """SAM's automatic masks of one frame (``AutomaticMaskGenerator.generate``), timed "amg"."""
        with self.ctx.timed("amg"):
            return AutomaticMaskGenerator(self.runner(), config=config).generate(
                frame, embedding=embedding, **kw
            )
