"""The served model's own Python environment (``.venv-triton``) and the ``tritonserver`` inside it.

Triton's python-backend stub embeds libpython and imports packages from the environment whose ``bin``
comes first on ``PATH``. The ``tritonserver`` we use ships in the ``nvidia-pytriton`` wheel, whose
stub rejects every output tensor under numpy 2 (docs/serving.md), so the served model runs in an
environment of its own with ``numpy<2``; the project's main environment keeps numpy 2.

:func:`ensure` creates that environment once (``python -m venv`` + ``pip install``) and reinstalls only
when the requirement list changes (a stamp file holds its hash). ``avs serve``, ``run.sh test`` and the
server tests share it. Command line: ``python -m runtime.serving.tritonenv [--venv DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import AVSError

# What the served model imports (the runtime itself comes from the repository via PYTHONPATH).
REQUIREMENTS = (
    "numpy>=1.24,<2",
    "onnxruntime>=1.18",
    "pillow>=10",
    "soxr>=0.3",
    "nvidia-pytriton==0.7.0",
)
REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds runtime/
STAMP = ".avs-installed"


class TritonEnvError(AVSError, RuntimeError):
    """The served model's environment cannot be created or lacks the tritonserver binary."""


@dataclass(frozen=True)
class TritonEnv:
    """A ready environment: ``venv`` folder, its ``python``, ``tritonserver`` binary and ``backend_dir``."""

    venv: Path
    python: Path
    tritonserver: Path
    backend_dir: Path

    def process_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment variables for ``tritonserver``: the venv's ``bin`` first on PATH, the repo on PYTHONPATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        env.pop("PYTHONHOME", None)
        return env


def default_venv() -> Path:
    """``$AVS_TRITON_VENV``, else ``.venv-triton`` in the repository root."""
    env = os.environ.get("AVS_TRITON_VENV")
    return Path(env) if env else REPO_ROOT / ".venv-triton"


def _stamp(python_version: str) -> str:
    return hashlib.sha256("\n".join((python_version, *REQUIREMENTS)).encode()).hexdigest()


def _venv_python_version(py: Path) -> str:
    out = subprocess.run(
        [str(py), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _locate(venv: Path, pyver: str) -> TritonEnv:
    site = venv / "lib" / f"python{pyver}" / "site-packages" / "pytriton" / "tritonserver"
    server = site / "bin" / "tritonserver"
    stub = site / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    shipped = site / "backends" / "python"
    for p in (server, stub, shipped):
        if not p.exists():
            raise TritonEnvError(
                f"{venv}: {p} is missing; delete {venv} and run "
                "`python -m runtime.serving.tritonenv` again"
            )
    # A backend folder of our own beside the wheel's: its python backend plus the stub for this Python.
    # It sits at the same depth as the wheel's backends/, so the stub's RPATH
    # ($ORIGIN/../../../../nvidia_pytriton.libs) still finds the libraries the wheel bundles.
    backend_dir = site / "avs-backends"
    py_backend = backend_dir / "python"
    if not (py_backend / "triton_python_backend_stub").is_file():
        py_backend.mkdir(parents=True, exist_ok=True)
        for f in shipped.iterdir():
            dst = py_backend / f.name
            if not dst.exists():
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, dst)
        shutil.copy2(stub, py_backend / "triton_python_backend_stub")
    return TritonEnv(venv, venv / "bin" / "python", server, backend_dir)


def ensure(
    venv: str | Path | None = None, *, python: str | None = None, quiet: bool = True
) -> TritonEnv:
    """Create or update the served model's environment when needed and return it.

    ``venv``: folder (default :func:`default_venv`). ``python``: interpreter that creates it (default:
    the running one; its major.minor picks the python-backend stub). Installs :data:`REQUIREMENTS` with
    pip only when the stamp differs. Concurrent callers wait for each other (a lock file).
    """
    import fcntl

    venv = Path(venv) if venv else default_venv()
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f"{venv.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        py = venv / "bin" / "python"
        if not py.exists():
            base = python or getattr(sys, "_base_executable", None) or sys.executable
            print(
                f"== creating {venv} (the served model's environment, numpy<2)",
                file=sys.stderr,
                flush=True,
            )
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pyver = _venv_python_version(py)
        want = _stamp(pyver)
        stamp = venv / STAMP
        if not stamp.is_file() or stamp.read_text().strip() != want:
            print(
                f"== installing {', '.join(REQUIREMENTS)} into {venv} (first time: a minute or two)",
                file=sys.stderr,
                flush=True,
            )
            cmd = [
                str(py),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *(["-q"] if quiet else []),
                *REQUIREMENTS,
            ]
            try:
                subprocess.run(cmd, check=True)
            except subprocess.CalledProcessError as e:
                raise TritonEnvError(
                    f"pip install into {venv} failed (exit {e.returncode}); see the output above"
                ) from e
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(
                    venv
                    / "lib"
                    / f"python{pyver}"
                    / "site-packages"
                    / "pytriton"
                    / "tritonserver"
                    / "avs-backends"
                )
            stamp.write_text(want + "\n")
        return _locate(venv, pyver)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="create/update the served model's environment (.venv-triton)"
    )
    p.add_argument(
        "--venv", default=None, help="folder (default: $AVS_TRITON_VENV or .venv-triton)"
    )
    p.add_argument("--python", default=None, help="interpreter that creates it (default: this one)")
    args = p.parse_args(argv)
    env = ensure(args.venv, python=args.python)
    print(
        f"tritonserver: {env.tritonserver}\nbackends:     {env.backend_dir}\npython:       {env.python}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
