"""The Box-Prompt stages: CLAP audio embeddings with the label bank, and the text-conditioned detector."""

from __future__ import annotations

import io

import numpy as np

from runtime.bundle.contract import (
    BOX_PROMPT_LABELS,
    CLAP_TEXT_BANK,
    DETECTOR_LENGTH_BANK,
    GRAPHS,
    detector_bank,
)
from runtime.errors import InputError
from runtime.preprocess.clap import clap_audio_input
from runtime.preprocess.detector import detector_input
from runtime.stages._context import StageContext


class Banks:
    """The bundle's banks (``manifest.banks``, .npy files), each loaded once as a read-only array."""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self._banks: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._banks:
            bundle = self.ctx.bundle
            banks = bundle.manifest.get("banks", {})
            if name not in banks:
                raise InputError(
                    f"bundle {bundle.root} has no bank {name!r}; rebuild it with the graphs that need "
                    "it (e.g. the Box-Prompt graphs)"
                )
            # the bytes that were checked against the manifest's sha256 (runtime.safefiles)
            arr = np.load(io.BytesIO(bundle.read_file(banks[name])), allow_pickle=False)
            arr.setflags(write=False)
            self._banks[name] = arr
        return self._banks[name]


def label_names(ctx: StageContext, name: str) -> list[str]:
    """A label list of the bundle (``manifest.labels.<name>.names``), in bank order."""
    entry = ctx.bundle.manifest.get("labels", {}).get(name)
    if not entry:
        raise InputError(
            f"bundle {ctx.bundle.root} has no label list {name!r} (manifest labels.{name})"
        )
    return list(entry["names"])


class ClapStage:
    """CLAP audio embeddings of a clip and the bundle's label bank (CLAP text embeddings)."""

    name = "clap"

    def __init__(self, ctx: StageContext, banks: Banks):
        self.ctx = ctx
        self._banks = banks

    def embeddings(self, audio, sample_rate: int | None, num_frames: int) -> np.ndarray:
        """CLAP audio embeddings, one per frame: float32 [F, D], rows L2-normalised. Timed "clap"."""
        with self.ctx.timed("clap"):
            c = self.ctx.section("clap")
            x = clap_audio_input(
                audio,
                sample_rate,
                num_frames,
                rate=c.sample_rate,
                clip_samples=c.clip_samples,
                chunk_seconds=c.chunk_seconds,
            )
            b, t = self.ctx.graph_input_shape("clap_audio")
            if isinstance(t, int) and t != x.shape[1]:
                raise InputError(
                    f"clap_audio was exported for T={t} samples, preprocessing gives {x.shape[1]}"
                )
            run = self.ctx.run
            if isinstance(b, int):  # fixed-batch graph: one chunk per call
                emb = np.concatenate(
                    [run("clap_audio", x[i : i + b])[0] for i in range(0, len(x), b)]
                )
            else:
                (emb,) = run("clap_audio", x)
            return (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).astype(np.float32)

    def bank(self) -> np.ndarray:
        """The CLAP text embeddings of the bundle's labels: float32 [N, D], rows L2-normalised."""
        return self._banks(CLAP_TEXT_BANK)

    def labels(self) -> list[str]:
        """The bundle's label names, in bank order."""
        return label_names(self.ctx, BOX_PROMPT_LABELS)


class DetectorStage:
    """The text-conditioned detector (GroundingDINO) on one frame and one label of the bank."""

    name = "detector"

    def __init__(self, ctx: StageContext, banks: Banks):
        self.ctx = ctx
        self._banks = banks

    @property
    def box_threshold(self) -> float:
        """The manifest's detector score threshold (0.3 in the reference)."""
        return float(self.ctx.section("detector").box_threshold)

    def image(self, frame: np.ndarray) -> tuple[np.ndarray, str]:
        """The detector input of a uint8 [H, W, 3] RGB frame: float32 [1, 3, h, w] at the graph's size and
        "reference" or "stretched" (:func:`runtime.preprocess.detector.detector_input`)."""
        graph_hw = tuple(int(v) for v in self.ctx.graph_input_shape("detector")[2:4])
        return detector_input(frame, self.ctx.section("detector"), graph_hw)

    def detect(
        self, image: np.ndarray, label_index: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """One detector call for one label: (boxes float32 [K, 4] normalised (cx, cy, w, h), scores
        float32 [K]) of the queries scoring > threshold. Timed "detector"."""
        with self.ctx.timed("detector"):
            n = int(self._banks(DETECTOR_LENGTH_BANK)[label_index])
            texts = []
            for spec in GRAPHS["detector"].inputs[1:]:
                arr = self._banks(detector_bank(spec.name))[label_index : label_index + 1]
                square = spec.shape.count("tokens") == 2  # [1, L, L] attention mask
                texts.append(np.ascontiguousarray(arr[:, :n, :n] if square else arr[:, :n]))
            scores, boxes = self.ctx.run("detector", image, *texts)
            keep = scores[0] > np.float32(threshold)
            return boxes[0][keep].astype(np.float32), scores[0][keep].astype(np.float32)
