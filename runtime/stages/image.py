"""The AudioCLIP image stage: CLIP preprocessing, image features (cached) and the audio-image heatmap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.bundle.contract import GRAPHS, IMAGE_GLOBAL, IMAGE_SURGERY_DENSE
from runtime.preprocess.image import clip_preprocess, squash_to_square
from runtime.prompting.heatmap import audio_image_heatmap
from runtime.stages._context import StageContext

CLIP_BATCH = 32  # images per audioclip_image call when scoring many crops


class ImageStage:
    """CLIP image features of frames (uint8 [H, W, 3] RGB) and heatmaps against audio embeddings."""

    name = "image"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx

    @property
    def size(self) -> int:
        """CLIP's square input size S (manifest ``preprocessing.image.size``)."""
        return self.ctx.section("image").size

    def squash(self, frame: np.ndarray) -> np.ndarray:
        """The frame as the CLIP models see it: uint8 [S, S, 3], squashed with the preset's antialiasing."""
        return squash_to_square(frame, self.size, antialias=bool(self.ctx.preset.image_antialias))

    def clip_images(
        self, frames: Sequence[np.ndarray], *, antialias: bool | None = None, squash: bool = False
    ) -> np.ndarray:
        """CLIP-preprocessed frames: float32 [N, 3, S, S] with the manifest's size, mean and std.

        ``squash``: first resize each frame to S x S ignoring its aspect ratio (the AVSBench
        convention, so a dense prediction covers the whole frame); otherwise CLIP's shorter-side
        resize and centre crop. antialias: None = the preset's.
        """
        im = self.ctx.section("image")
        aa = bool(self.ctx.preset_value("image_antialias", antialias))
        frames = list(frames)
        if squash:
            frames = [squash_to_square(f, im.size, antialias=aa) for f in frames]
        return clip_preprocess(
            frames, size=im.size, mean=list(im.mean), std=list(im.std), antialias=aa
        )

    def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``audioclip_image`` outputs for preprocessed images float32 [N, 3, S, S], keyed by output
        name (``IMAGE_GLOBAL`` [N, D], ``IMAGE_DENSE`` / ``IMAGE_SURGERY_DENSE`` [N, D, g, g]). Each
        image's outputs are cached by the hash of its bytes. Not timed (the callers' steps are)."""
        names = GRAPHS["audioclip_image"].output_names
        if not self.ctx.cache.max_bytes:
            return dict(zip(names, self.ctx.run("audioclip_image", images), strict=True))

        def compute(batch: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            outs = self.ctx.run("audioclip_image", np.stack(batch))
            return [
                {n: o[j : j + 1].copy() for n, o in zip(names, outs, strict=True)}
                for j in range(len(batch))
            ]

        per = self.ctx.cached("audioclip_image", list(np.asarray(images)), compute)
        return {n: np.concatenate([p[n] for p in per]) for n in names}

    def global_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """CLIP global embeddings of uint8 images of any size (CLIP's resize + centre crop), in batches
        of :data:`CLIP_BATCH`: float32 [N, D], not normalised."""
        images = list(images)
        return np.concatenate(
            [
                self.features(self.clip_images(images[a : a + CLIP_BATCH]))[IMAGE_GLOBAL]
                for a in range(0, len(images), CLIP_BATCH)
            ]
        )

    def heatmaps(
        self, frames: Sequence[np.ndarray], audio_emb: np.ndarray, *, reverse: bool | None = None
    ) -> np.ndarray:
        """Audio-image heatmaps (spec 4.0), one per frame: float32 [N, S, S] in [0, 1].

        frames: N uint8 [H, W, 3] RGB; audio_emb: float [N, D] AudioCLIP audio embeddings (frame k:
        row k). The map covers the frame squashed to S x S (map pixel (row, col) = pixel (row, col) of
        the squashed frame). ``reverse``: ``1 - cosine`` (None: the preset's ``heatmap_reverse``). A
        frame whose similarities are all equal gives an all-zero map. Timed "image" and "heatmap".
        """
        with self.ctx.timed("image"):
            feats = self.features(self.clip_images(list(frames), squash=True))
        with self.ctx.timed("heatmap"):
            rev = bool(self.ctx.preset_value("heatmap_reverse", reverse))
            s = self.size
            return audio_image_heatmap(
                feats[IMAGE_SURGERY_DENSE], audio_emb, out_size=(s, s), reverse=rev
            )
