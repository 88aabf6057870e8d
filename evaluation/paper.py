"""The paper's AVSBench figures (the poster's tables) and which row a runtime mode is compared with."""

from __future__ import annotations

__all__ = ["PAPER", "PAPER_SOURCE", "SUPERVISED", "paper_decimals", "paper_method"]

PAPER_SOURCE = (
    "Yu et al., BMVC 2023 poster, 'Results on Supervised AVS' and 'Results on Zero-shot AVS' tables "
    "(spec/paper-poster.txt; headline rows also in spec/sam4avs-reference.md section 7). "
    "mIoU in %, F-score (beta^2 = 0.3) as a fraction; AVSBench-object v1 test splits."
)

# method -> {"s4": (mIoU %, F), "ms3": (mIoU %, F)}, exactly as printed on the poster.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    # supervised
    "TPAVI-ResNet50": {"s4": (72.79, 0.848), "ms3": (47.88, 0.578)},
    "AC-FPN (Hadamard)": {"s4": (77.12, 0.874), "ms3": (49.95, 0.635)},
    "AC-FPN (Concatenation)": {"s4": (77.29, 0.879), "ms3": (48.63, 0.637)},
    # zero-shot
    "Random-SAM": {"s4": (7.0, 0.240), "ms3": (11.5, 0.187)},
    "Full-mask": {"s4": (19.0, 0.226), "ms3": (12.7, 0.170)},
    "No-Prompt": {"s4": (23.8, 0.358), "ms3": (19.7, 0.242)},
    "Point-Prompt (global)": {"s4": (27.2, 0.424), "ms3": (19.4, 0.279)},
    "Point-Prompt (local)": {"s4": (30.7, 0.416), "ms3": (20.0, 0.270)},
    "Point-Prompt (dense)": {"s4": (40.3, 0.515), "ms3": (28.8, 0.333)},
    "Box-Prompt": {"s4": (51.2, 0.615), "ms3": (41.8, 0.478)},
}
SUPERVISED = ("TPAVI-ResNet50", "AC-FPN (Hadamard)", "AC-FPN (Concatenation)")

# runtime mode -> paper method (acfpn depends on the bundle's fusion, see paper_method)
MODE_METHOD = {
    "full-mask": "Full-mask",
    "random-sam": "Random-SAM",
    "no-prompt": "No-Prompt",
    "point-global": "Point-Prompt (global)",
    "point-local": "Point-Prompt (local)",
    "point-dense": "Point-Prompt (dense)",
    "box": "Box-Prompt",
}
FUSION_METHOD = {"hadamard": "AC-FPN (Hadamard)", "concatenation": "AC-FPN (Concatenation)"}


def paper_method(mode: str, fusion: str | None = None) -> str | None:
    """The paper's row for a runtime ``mode`` (None when the paper reports none, e.g. ``heatmap``).

    ``fusion``: the bundle's AC-FPN fusion ("hadamard" or "concatenation") for ``mode="acfpn"``.
    """
    if mode == "acfpn":
        return FUSION_METHOD.get(fusion or "hadamard")
    return MODE_METHOD.get(mode)


def paper_decimals(method: str) -> int:
    """Decimals of the method's mIoU as the poster prints it: 77.12 (supervised), 51.2 (zero-shot)."""
    return 2 if method in SUPERVISED else 1
