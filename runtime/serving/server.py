"""Starting and stopping a local ``tritonserver`` (the nvidia-pytriton wheel's) on a model repository.

Used by ``avs serve`` and by the server tests. The server runs in its own process group with the
served model's environment (:mod:`runtime.serving.tritonenv`), model control mode ``none`` (no model
loading over the network: Triton's docs warn that it can lead to arbitrary code execution), and
listens on ``host`` only.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from runtime.errors import AVSError
from runtime.serving.tritonenv import TritonEnv

# Endpoint categories of Triton's KServe v2 HTTP / gRPC APIs. Health (probes) and metadata stay open;
# every other one needs the operator's header (``--http-restricted-api`` / ``--grpc-restricted-protocol``),
# inference included unless the operator opens it (``open_inference``, the default of ``avs serve``).
OPEN_APIS = ("health", "metadata")
ADMIN_APIS = (
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
ADMIN_KEY_HEADER = "avs-admin-key"  # the HTTP header a restricted request must carry
# Triton prefixes the key for gRPC: the metadata key a gRPC client sends
GRPC_ADMIN_KEY_HEADER = "triton-grpc-protocol-" + ADMIN_KEY_HEADER


class ServerError(AVSError, RuntimeError):
    """tritonserver did not start, or exited, or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the server outlives a killed parent
        pass


class TritonServer:
    """One ``tritonserver`` process on ``repo``.

    Ports: ``http_port`` (KServe v2 REST), ``grpc_port``, ``metrics_port`` (Prometheus). ``log_path``:
    file for the server's output (None = inherit this process's stdout/stderr).
    ``exit_timeout_s``: how long Triton waits for in-flight requests after SIGTERM/SIGINT.
    ``admin_key``: value of the ``avs-admin-key`` header that the restricted endpoint categories
    (:data:`ADMIN_APIS`: shared memory, model config and repository, statistics, trace, logging)
    require over HTTP and gRPC; None = a random key (the categories are then closed to everyone).
    Health and metadata stay open. ``inference_key``: when given (and ``open_inference`` False),
    inference needs the same header with this value too.
    """

    def __init__(
        self,
        repo: str | Path,
        env: TritonEnv,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_path: str | Path | None = None,
        exit_timeout_s: int = 30,
        verbose: bool = False,
        extra_env: dict[str, str] | None = None,
        admin_key: str | None = None,
        open_inference: bool = True,
        inference_key: str | None = None,
    ):
        self.repo, self.env, self.host = Path(repo), env, host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.log_path = Path(log_path) if log_path else None
        self.exit_timeout_s = exit_timeout_s
        self.verbose = verbose
        self.extra_env = dict(extra_env or {})
        # the restricted endpoints need this header value; None = a random one nobody knows
        self.admin_key = admin_key if admin_key else secrets.token_urlsafe(24)
        for what, key in (("admin_key", self.admin_key), ("inference_key", inference_key)):
            if key is not None and not re.fullmatch(r"[A-Za-z0-9._~+/-]{16,256}", key):
                raise ServerError(
                    f"{what} must be 16..256 characters of [A-Za-z0-9._~+/-] (a header value)"
                )
        self.open_inference = open_inference or inference_key is None
        self.inference_key = None if self.open_inference else inference_key
        self.proc: subprocess.Popen | None = None
        self._log = None

    # --- addresses -------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        """The tritonserver command line."""
        return [
            str(self.env.tritonserver),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.env.backend_dir}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={1 if self.verbose else 0}",
            *self.restriction_flags(),
        ]

    def restriction_flags(self) -> list[str]:
        """``--http-restricted-api`` / ``--grpc-restricted-protocol`` flags of :data:`ADMIN_APIS`
        (and inference, with an ``inference_key``)."""
        groups = [(",".join(ADMIN_APIS), self.admin_key)]
        if self.inference_key is not None:
            groups.append(("inference", self.inference_key))
        out = []
        for apis, key in groups:
            out.append(f"--http-restricted-api={apis}:{ADMIN_KEY_HEADER}={key}")
            out.append(f"--grpc-restricted-protocol={apis}:{ADMIN_KEY_HEADER}={key}")
        return out

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> TritonServer:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError("this server is already running")
        env = self.env.process_env()
        env.update(self.extra_env)
        out = None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
            out = self._log
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    def is_ready(self, timeout: float = 1.0) -> bool:
        """GET ``/v2/health/ready`` answers 200."""
        try:
            with urllib.request.urlopen(
                f"http://{self.http_url}/v2/health/ready", timeout=timeout
            ) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server log (when logging to a file)."""
        if not self.log_path or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the server is ready; :class:`ServerError` (with the log's tail) if it exits or times out."""
        assert self.proc is not None, "start() first"
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.proc.returncode} before it was ready\n"
                    + self.log_tail()
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        self.kill()
        raise ServerError(f"tritonserver was not ready after {timeout:.0f} s\n" + self.log_tail())

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM): it stops taking requests and finishes those in flight."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (its model stubs included) and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end; its exit code, or None on timeout."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default exit_timeout_s + 10 s), then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        self.terminate()
        code = self.wait(self.exit_timeout_s + 10 if timeout is None else timeout)
        # the stubs may outlive a killed server for a moment; take the whole group down
        self.kill()
        if self._log:
            self._log.close()
            self._log = None
        return code if code is not None else self.proc.returncode

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
