"""The sides of ``benchmarks.run`` (who runs a case) and their labels, shared with its report writers."""

from __future__ import annotations

SIDES = (
    "reference",
    "reference-bf16",
    "fp32",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-best",
    "int8",
)
SIDE_LABEL = {
    "reference": "reference (torch)",
    "reference-bf16": "torch bf16 autocast (what a user could pick instead)",
    "fp32": "runtime fp32",
    "openvino-fp32": "runtime OpenVINO fp32",
    "openvino-bf16": "runtime OpenVINO bf16 (asked for, gated)",
    "openvino-best": "runtime OpenVINO best gated precision",
    "int8": "runtime int8",
}
# runtime.load(backend=, precision=) of each runtime side ("fp32" is onnxruntime, today's exact path)
SIDE_EXECUTION = {
    "fp32": {"backend": "onnxruntime", "precision": "fp32"},
    "openvino-fp32": {"backend": "openvino", "precision": "fp32"},
    "openvino-bf16": {"backend": "openvino", "precision": "bf16"},
    "openvino-best": {"backend": "openvino", "precision": "auto"},
    "int8": {"backend": "onnxruntime", "precision": "auto"},
}
