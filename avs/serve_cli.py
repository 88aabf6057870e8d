"""``avs serve`` and ``avs triton-repo``: the serving subcommands, hooked into ``avs.cli`` by two calls.

``add_parsers(sub)`` adds the subparsers; ``COMMANDS`` maps their names to the functions that run them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from runtime.backends.options import add_execution_args


def example_request_body(mode: str | None = None) -> dict:
    """A minimal KServe v2 JSON request: one grey 8x8 frame and 8 samples of silence at 1000 Hz."""
    body = {
        "inputs": [
            {"name": "frames", "shape": [1, 8, 8, 3], "datatype": "UINT8", "data": [128] * 192},
            {"name": "audio", "shape": [8], "datatype": "FP32", "data": [0.0] * 8},
            {"name": "sample_rate", "shape": [1], "datatype": "INT32", "data": [1000]},
        ]
    }
    if mode:
        body["inputs"].append({"name": "mode", "shape": [1], "datatype": "BYTES", "data": [mode]})
    return body


def curl_example(host: str, http_port: int, mode: str | None = None) -> str:
    """A ready-to-paste curl command that sends :func:`example_request_body` to the ``avs`` model."""
    body = json.dumps(example_request_body(mode), separators=(",", ":"))
    return (
        f"curl -s -X POST http://{host}:{http_port}/v2/models/avs/infer "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


# flag -> (Budget field, type, scale from the flag's unit to the field's)
BUDGET_FLAGS = {
    "max-frames": ("max_frames", int, 1, "frames per request"),
    "max-total-mp": ("max_total_pixels", float, 1_000_000, "megapixels of all frames of a request"),
    "max-decoded-mb": ("max_decoded_mb", float, 1, "MiB the decoded frames of a request may take"),
    "max-audio-s": ("max_audio_seconds", float, 1, "seconds of audio per request"),
    "max-points-per-side": ("max_points_per_side", int, 1, "AMG points_per_side"),
    "max-crop-layers": ("max_crop_n_layers", int, 1, "AMG crop_n_layers"),
    "max-points-per-batch": ("max_points_per_batch", int, 1, "AMG points_per_batch"),
    "max-amg-points": ("max_amg_points", int, 1, "AMG grid points per frame over all crops"),
    "max-dense-points": ("max_dense_points", int, 1, "point-dense max_points"),
    "max-box-labels": ("max_box_labels", int, 1, "box mode's k"),
    "max-params-bytes": ("max_params_bytes", int, 1, "bytes of the params JSON"),
}


def add_budget_args(p) -> None:
    """The request-budget flags (defaults: :data:`runtime.budget.DEFAULT_BUDGET`) and ``--deadline-s``."""
    from runtime.budget import DEFAULT_BUDGET, DEFAULT_DEADLINE_S

    g = p.add_argument_group("request budget (checked before any decoding or inference)")
    for flag, (field, typ, scale, what) in BUDGET_FLAGS.items():
        default = getattr(DEFAULT_BUDGET, field) / scale
        g.add_argument(
            f"--{flag}",
            type=typ,
            default=typ(default),
            help=f"largest {what} (default {default:g})",
        )
    g.add_argument(
        "--deadline-s",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help=f"seconds a request may run before it is cancelled (0 = none; default {DEFAULT_DEADLINE_S:g})",
    )


def budget_from_args(args: argparse.Namespace):
    """The :class:`runtime.budget.Budget` of the budget flags."""
    from runtime.budget import DEFAULT_BUDGET

    changes = {}
    for flag, (field, _typ, scale, _) in BUDGET_FLAGS.items():
        v = getattr(args, flag.replace("-", "_")) * scale
        changes[field] = v if field in ("max_decoded_mb", "max_audio_seconds") else int(v)
    changes["deadline_s"] = args.deadline_s if args.deadline_s and args.deadline_s > 0 else None
    return DEFAULT_BUDGET.replace(**changes)


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.bundle import Bundle
    from runtime.serving import repo, tritonenv
    from runtime.serving.server import ADMIN_APIS, ADMIN_KEY_HEADER, TritonServer

    bundle = Bundle.open(args.bundle, verify=True)  # a clear error before anything starts
    budget = budget_from_args(args)
    admin_key = os.environ.get(args.admin_key_env) or None
    env = tritonenv.ensure(quiet=True)
    with tempfile.TemporaryDirectory(prefix="avs-serve-") as tmp:
        if args.composed:
            from runtime.serving.composed import write_composed_repository

            write_composed_repository(
                bundle.root,
                Path(tmp) / "repo",
                backend="python",
                instances=args.instances,
                graph_instances=args.graph_instances,
                queue_delay_us=args.queue_delay_us,
                max_request_mb=args.max_request_mb,
                threads=args.threads,
                graph_threads=args.threads,
                preset=args.preset,
                gpu=args.gpu,
                budget=budget,
                max_queue=args.max_queue,
                queue_timeout_s=args.queue_timeout_s,
            )
            tmp = str(Path(tmp) / "repo")
        else:
            repo.write_avs_model(
                tmp,
                bundle.root,
                instances=args.instances,
                max_request_mb=args.max_request_mb,
                threads=args.threads,
                preset=args.preset,
                gpu=args.gpu,
                budget=budget,
                max_queue=args.max_queue,
                queue_timeout_s=args.queue_timeout_s,
                backend=args.backend or "",
                precision=args.precision or "",
                cache_dir=str(Path(args.cache_dir).resolve()) if args.cache_dir else "",
            )
        srv = TritonServer(
            tmp,
            env,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            exit_timeout_s=args.exit_timeout,
            verbose=args.verbose,
            admin_key=admin_key,
        )
        signals = {"n": 0}

        def on_signal(signum, _frame):
            signals["n"] += 1
            if signals["n"] == 1:
                print(
                    f"\navs serve: {signal.Signals(signum).name}: stopping; in-flight requests finish "
                    f"(up to {args.exit_timeout} s). Send it again to kill the server.",
                    file=sys.stderr,
                    flush=True,
                )
                srv.terminate()
            else:
                print("avs serve: killing the server", file=sys.stderr, flush=True)
                srv.kill()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            srv.start()
            t0 = time.monotonic()
            while not srv.is_ready(timeout=1.0):
                if srv.proc.poll() is not None:
                    if signals["n"]:
                        return 0
                    print(
                        f"error: tritonserver exited with code {srv.proc.returncode} before it was ready",
                        file=sys.stderr,
                    )
                    return 1
                if time.monotonic() - t0 > args.ready_timeout:
                    srv.kill()
                    print(
                        f"error: tritonserver was not ready after {args.ready_timeout} s",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(0.2)
            rw = " (RANDOM WEIGHTS: masks are meaningless)" if bundle.random_weights else ""
            how = (
                f" (composed: a BLS pipeline calling {len(bundle.graphs)} graph models)"
                if args.composed
                else ""
            )
            print(
                f"\navs serve: bundle {bundle.root}{rw} is served by Triton as model 'avs'{how}\n"
                f"  HTTP    http://{srv.http_url}   (KServe v2; ready: /v2/health/ready)\n"
                f"  gRPC    {srv.grpc_url}\n"
                f"  metrics {srv.metrics_url}\n"
                f"  restricted (header {ADMIN_KEY_HEADER}: "
                f"{'$' + args.admin_key_env if admin_key else 'a random key: closed'}): "
                f"{', '.join(ADMIN_APIS)}\n"
                f"  budget per request: {budget.max_frames} frames, "
                f"{budget.max_total_pixels / 1e6:g} MP, {budget.max_audio_seconds:g} s audio; "
                f"deadline {budget.deadline_s or 'none'} s; queue {args.max_queue}\n"
                f"example request:\n  {curl_example(args.host, args.http_port)}\n"
                f"Python: runtime.serving.client.TritonClient('{srv.http_url}').segment(frames, audio, 16000)\n"
                "avs serve: ready (Ctrl-C stops)",
                flush=True,
            )
            while srv.proc.poll() is None:
                time.sleep(0.2)
            code = srv.proc.returncode
            srv.kill()  # the model stubs go with it
            print(f"avs serve: server stopped (exit code {code})", file=sys.stderr, flush=True)
            return 0 if signals["n"] else (code or 1)
        finally:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.kill()
            for s, h in old.items():
                signal.signal(s, h)


def cmd_triton_repo(args: argparse.Namespace) -> int:
    from export.triton_repo import write_repository

    try:
        if args.composed:
            from runtime.serving.composed import write_composed_repository

            out = write_composed_repository(
                args.bundle,
                args.out,
                backend=args.graph_backend,
                self_contained=True,
                gpu=args.gpu,
                instances=args.instances,
                graph_instances=args.graph_instances,
                queue_delay_us=args.queue_delay_us,
                max_request_mb=args.max_request_mb,
                force=args.force,
                budget=budget_from_args(args),
                max_queue=args.max_queue,
                queue_timeout_s=args.queue_timeout_s,
            )
        else:
            out = write_repository(
                args.bundle,
                args.out,
                gpu=args.gpu,
                instances=args.instances,
                max_request_mb=args.max_request_mb,
                force=args.force,
                budget=budget_from_args(args),
                max_queue=args.max_queue,
                queue_timeout_s=args.queue_timeout_s,
            )
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"Triton model repository written to {out}/ ({', '.join(sorted(p.name for p in out.iterdir() if p.is_dir()))})"
    )
    return 0


def _graph_instances_arg(text: str) -> dict[str, int]:
    from runtime.serving.composed import parse_graph_instances

    try:
        return parse_graph_instances(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _composed_options(p, what: str) -> None:
    from runtime.serving.composed import QUEUE_DELAY_US

    p.add_argument(
        "--composed",
        action="store_true",
        help=f"the avs model as a BLS pipeline calling one model per graph, each with dynamic "
        f"batching and its own instances ({what}); --instances is then the avs model's",
    )
    p.add_argument(
        "--graph-instances",
        type=_graph_instances_arg,
        default={},
        metavar="GRAPH=N,...",
        help="instances of graph models with --composed (default 1 each)",
    )
    p.add_argument(
        "--queue-delay-us",
        type=int,
        default=QUEUE_DELAY_US,
        help=f"dynamic batcher's max queue delay of the graph models (default {QUEUE_DELAY_US})",
    )


def add_parsers(sub) -> None:
    """Add the ``serve`` and ``triton-repo`` subparsers to ``avs``'s subparsers ``sub``."""
    from runtime.serving import wire

    s = sub.add_parser("serve", help="serve a bundle with NVIDIA Triton (KServe v2 HTTP + gRPC)")
    s.add_argument("bundle", help="bundle folder, e.g. engines/default")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument(
        "--instances",
        type=int,
        default=1,
        help="model instances (processes), each loads the bundle",
    )
    s.add_argument(
        "--max-request-mb",
        type=int,
        default=wire.DEFAULT_MAX_REQUEST_MB,
        help="largest request (all inputs) in MiB",
    )
    s.add_argument(
        "--threads", type=int, default=0, help="onnxruntime threads per instance (0 = default)"
    )
    s.add_argument("--preset", default=None)
    s.add_argument(
        "--gpu",
        action="store_true",
        help="KIND_GPU instances (needs onnxruntime-gpu in .venv-triton)",
    )
    s.add_argument(
        "--exit-timeout", type=int, default=30, help="seconds in-flight requests get on stop"
    )
    s.add_argument(
        "--ready-timeout", type=int, default=300, help="seconds to wait for the server to be ready"
    )
    s.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    s.add_argument(
        "--admin-key-env",
        default="AVS_ADMIN_KEY",
        help="environment variable holding the key (header avs-admin-key) that opens the "
        "restricted endpoints: shared memory, model config/repository, statistics, trace, "
        "logging (unset: a random key, they stay closed; health and metadata are always open)",
    )
    _composed_options(
        s, "the graph models run the runtime's onnxruntime in Triton's python backend"
    )
    add_queue_args(s)
    add_budget_args(s)
    add_execution_args(s)

    r = sub.add_parser(
        "triton-repo", help="write a Triton model repository for a bundle (for clusters)"
    )
    r.add_argument("bundle")
    r.add_argument("out")
    r.add_argument("--gpu", action="store_true", help="KIND_GPU instances (default KIND_CPU)")
    r.add_argument("--instances", type=int, default=1, help="instances per model")
    r.add_argument("--max-request-mb", type=int, default=wire.DEFAULT_MAX_REQUEST_MB)
    r.add_argument(
        "--force",
        action="store_true",
        help="replace OUT if it is a repository this command wrote (it holds its marker file)",
    )
    _composed_options(r, "graph models on Triton's onnxruntime/tensorrt backends (--graph-backend)")
    r.add_argument(
        "--graph-backend",
        choices=("onnxruntime", "python"),
        default="onnxruntime",
        help="backend of the graph models with --composed (python: the runtime's, for a Triton "
        "without the onnxruntime backend)",
    )
    add_queue_args(r)
    add_budget_args(r)


def add_queue_args(p) -> None:
    """Triton's queue policy flags of the ``avs`` model."""
    from runtime.serving.repo import DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT_S

    p.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help=f"requests that may wait for an instance; more are refused (default {DEFAULT_MAX_QUEUE})",
    )
    p.add_argument(
        "--queue-timeout-s",
        type=float,
        default=DEFAULT_QUEUE_TIMEOUT_S,
        help=f"seconds a request may wait in the queue (default {DEFAULT_QUEUE_TIMEOUT_S:g})",
    )


COMMANDS = {"serve": cmd_serve, "triton-repo": cmd_triton_repo}
