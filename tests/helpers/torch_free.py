"""The torch-free lane: the runtime's tests with everything outside the runtime's dependencies
unimportable.

Used as a pytest plugin (``-p tests.helpers.torch_free``), it puts a :data:`sys.meta_path` finder in
front of every other one before any test module or conftest is imported; importing one of
:data:`BLOCKED` (torch and the PyTorch stack, the project's other layers, the export-side libraries)
then raises ``ModuleNotFoundError``, as on a machine where only ``pip install avs-runtime`` (no extras)
ran. Run the lane (the README's test section)::

    python -m pytest -p tests.helpers.torch_free -m runtime_only

Which tests belong to it is decided in tests/conftest.py (:func:`runtime_only_module`): modules that
import nothing but the standard library, the runtime, its dependencies and the test helpers, and use
no fixture that needs the exporter. The tiny bundle comes from the cross-session cache or
``$AVS_TEST_BUNDLE`` (built by the full environment); where neither has one, those tests skip.
"""

from __future__ import annotations

import importlib.abc
import sys

#: top-level modules a runtime-only install does not have
BLOCKED = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "onnx",
        "onnxscript",
        "scipy",
        "librosa",
        "segment_anything",
        "transformers",
        "laion_clap",
        "groundingdino",
        "timm",
        "sklearn",
        "models",
        "export",
        "reference",
        "benchmarks",
        "avs",
        "evaluation",
    }
)


class Blocker(importlib.abc.MetaPathFinder):
    """Refuses the modules of :data:`BLOCKED` (and their submodules)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (blocked: the torch-free lane runs the runtime with its "
                "own dependencies only)",
                name=fullname,
            )
        return None


def install() -> None:
    """Block :data:`BLOCKED` in this process; refuses if one of them is imported already."""
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    if loaded:
        raise RuntimeError(f"the torch-free lane starts too late: already imported {loaded[:5]}")
    if not any(isinstance(f, Blocker) for f in sys.meta_path):
        sys.meta_path.insert(0, Blocker())


def pytest_configure(config):
    install()
    config.torch_free = True
