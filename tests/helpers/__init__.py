"""Helpers shared by the test folders: where the repository and the real media are.

Modules: :mod:`tests.helpers.avsbench` (a tiny on-disk AVSBench, WAV writer), :mod:`tests.helpers.video`
(videos whose frames carry their index), :mod:`tests.helpers.serve` (clips for the server tests; also a
script run inside .venv-triton), :mod:`tests.helpers.cache` (expensive fixtures cached across sessions).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``$AVS_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("AVS_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"
