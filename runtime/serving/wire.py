"""The wire contract of the served pipeline model ``avs`` (KServe v2 over HTTP and gRPC).

One table, read by the Triton model (``runtime.serving.triton_model``), the client
(``runtime.serving.client``), the repository writers (``runtime.serving.repo``, ``export/triton_repo.py``) and
the tests, so the names, dtypes and shapes cannot drift apart.

Inputs (all marked optional in ``config.pbtxt``; the model checks which combination was sent):

==================  ========  ==============  ================================================
name                dtype     shape           meaning
==================  ========  ==============  ================================================
``frames``          UINT8     [N, H, W, 3]    N RGB frames, 0..255 (or send ``frames_encoded``)
``frames_encoded``  BYTES     [N]             N PNG/JPEG files (one per frame, same size)
``audio``           FP32      [T]             mono waveform in [-1, 1], any length
``sample_rate``     INT32     [1]             Hz, required with ``audio``
``audio_encoded``   BYTES     [1]             one WAV file (instead of ``audio`` + rate)
``mode``            BYTES     [1]             a mode name (UTF-8); default: bundle's best
``params``          BYTES     [1]             JSON object of mode parameters
==================  ========  ==============  ================================================

Outputs: ``masks`` BOOL [N, H, W] (True = sounding object) and ``info`` BYTES [1], the UTF-8 JSON of
:meth:`runtime.result.SegmentResult.info` (mode, preset, per-frame coverage/score/prompt, timings,
providers, precision, ``random_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAME = "avs"
MODEL_VERSION = "1"

# Limits of one request, checked by the model (the server checks dtypes and shapes itself).
MAX_FRAMES = 64  # frames per request
DEFAULT_MAX_REQUEST_MB = (
    64  # total bytes of all inputs of one request, in MiB (``--max-request-mb``)
)


@dataclass(frozen=True)
class Tensor:
    """One input or output: KServe v2 ``name``, Triton ``dtype`` (e.g. "UINT8"), ``dims`` (-1 = any)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    doc: str = ""

    @property
    def config_dtype(self) -> str:
        """The dtype as ``config.pbtxt`` spells it ("TYPE_UINT8", "TYPE_STRING" for BYTES)."""
        return "TYPE_STRING" if self.dtype == "BYTES" else f"TYPE_{self.dtype}"


INPUTS: tuple[Tensor, ...] = (
    Tensor("frames", "UINT8", (-1, -1, -1, 3), "N RGB frames [N, H, W, 3], 0..255"),
    Tensor("frames_encoded", "BYTES", (-1,), "N PNG/JPEG files, all of one size"),
    Tensor("audio", "FP32", (-1,), "mono waveform [T] in [-1, 1]"),
    Tensor("sample_rate", "INT32", (1,), "sample rate of `audio` in Hz"),
    Tensor("audio_encoded", "BYTES", (1,), "one WAV file"),
    Tensor("mode", "BYTES", (1,), "mode name, UTF-8"),
    Tensor("params", "BYTES", (1,), "JSON object of mode parameters"),
)
OUTPUTS: tuple[Tensor, ...] = (
    Tensor("masks", "BOOL", (-1, -1, -1), "[N, H, W] masks, True = sounding object"),
    Tensor(
        "info",
        "BYTES",
        (1,),
        "UTF-8 JSON: mode, preset, frames (coverage, score, prompt), timings, providers",
    ),
)
INPUT_NAMES = tuple(t.name for t in INPUTS)
OUTPUT_NAMES = tuple(t.name for t in OUTPUTS)
BY_NAME = {t.name: t for t in INPUTS + OUTPUTS}


def markdown_table() -> str:
    """The contract as a Markdown table (README / docs)."""
    rows = ["| direction | name | dtype | shape | meaning |", "|---|---|---|---|---|"]
    for kind, ts in (("input", INPUTS), ("output", OUTPUTS)):
        for t in ts:
            dims = ", ".join("-1" if d < 0 else str(d) for d in t.dims)
            rows.append(f"| {kind} | `{t.name}` | {t.dtype} | [{dims}] | {t.doc} |")
    return "\n".join(rows)
