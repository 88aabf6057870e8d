"""The composed Triton pipeline (``avs serve --composed``): a BLS ``avs`` model calling one model per graph.

Real tritonserver on 127.0.0.1 (the nvidia-pytriton wheel's, python backend only: the graph models run
the runtime's onnxruntime), tiny bundle. One server (4 avs instances, 1 thread per graph model, a 20 ms
batching window) serves the module; the fault test starts its own. Set ``AVS_TEST_BUNDLE`` to reuse a
built tiny bundle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.modes import MODES
from runtime.serving import tritonenv, wire
from runtime.serving.client import RequestRejected, TritonClient
from runtime.serving.composed import (
    MARKER,
    PREFERRED_BATCH,
    batchable,
    write_composed_repository,
)
from runtime.serving.server import ADMIN_KEY_HEADER, TritonServer, free_port
from tests.helpers.serve import clip

FAST_PARAMS = {"no-prompt": {"amg": {"points_per_side": 4}}}
QUEUE_US = 20000
THREADS_ENV = {"AVS_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE")
    return Path(env) if env else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def triton_env():
    return tritonenv.ensure()


def start(tmp: Path, bundle: Path, env, **kw) -> TritonServer:
    repo = write_composed_repository(
        bundle, tmp / "repo", instances=kw.pop("instances", 4), graph_threads=1, threads=1, **kw
    )
    srv = TritonServer(
        repo,
        env,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp / "tritonserver.log",
        exit_timeout_s=10,
        extra_env=THREADS_ENV,
    )
    srv.start()
    try:
        srv.wait_ready(300)
    except Exception:
        srv.stop(5)
        raise
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle, triton_env):
    srv = start(tmp_path_factory.mktemp("composed"), bundle, triton_env, queue_delay_us=QUEUE_US)
    yield srv
    srv.stop(15)


def supported_modes(bundle: Path) -> list[str]:
    b = runtime.Bundle.open(bundle, verify=False)
    return [m for m, spec in MODES.items() if all(b.has(g) for g in spec.graphs)]


def stats(srv: TritonServer, model: str) -> dict:
    """The model's statistics (a restricted endpoint: the server's admin key opens it)."""
    req = urllib.request.Request(
        f"http://{srv.http_url}/v2/models/{model}/stats", headers={ADMIN_KEY_HEADER: srv.admin_key}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["model_stats"][0]


# --- repository (no server) ------------------------------------------------------------------------


def test_composed_configs_parse_and_the_cluster_backend_has_the_same_models(tmp_path, bundle):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    def parse(p: Path):
        return text_format.Parse(p.read_text(), pb.ModelConfig())

    local = write_composed_repository(
        bundle, tmp_path / "py", graph_instances={"sam_image_encoder": 3}, queue_delay_us=1500
    )
    cluster = write_composed_repository(
        bundle,
        tmp_path / "ort",
        backend="onnxruntime",
        self_contained=True,
        graph_instances={"sam_image_encoder": 3},
        queue_delay_us=1500,
    )
    b = runtime.Bundle.open(bundle)
    for repo in (local, cluster):
        avs = parse(repo / "avs" / "config.pbtxt")
        assert avs.backend == "python" and avs.max_batch_size == 0
        assert [i.name for i in avs.input] == list(wire.INPUT_NAMES)
        assert [o.name for o in avs.output] == list(wire.OUTPUT_NAMES)
        assert avs.parameters["graph_models"].string_value == "1"
        models = sorted(p.name for p in repo.iterdir() if not p.name.startswith("."))
        assert models == sorted(["avs", *b.graphs])
        assert (repo / MARKER).is_file()  # --force replaces only what this writer made
    assert (cluster / "avs" / "1" / "bundle" / "manifest.json").is_file()
    assert (cluster / "avs" / "1" / "runtime" / "serving" / "composed.py").is_file()
    for name, entry in b.graphs.items():
        py, ort = parse(local / name / "config.pbtxt"), parse(cluster / name / "config.pbtxt")
        assert py.backend == "python" and ort.backend == "onnxruntime"
        assert py.parameters["graph"].string_value == name
        assert (cluster / name / "1" / "model.onnx").is_file()
        for field in (
            "input",
            "output",
        ):  # same names, types and shapes: the BLS model is unchanged
            a = [(t.name, t.data_type, list(t.dims)) for t in getattr(py, field)]
            assert a == [(t.name, t.data_type, list(t.dims)) for t in getattr(ort, field)], name
        assert [t.name for t in py.input] == [t["name"] for t in entry["inputs"]]
        assert py.max_batch_size == ort.max_batch_size
        assert py.instance_group[0].count == (3 if name == "sam_image_encoder" else 1)
        if batchable(entry):
            assert py.max_batch_size == 8
            for cfg in (py, ort):
                assert list(cfg.dynamic_batching.preferred_batch_size) == list(PREFERRED_BATCH)
                assert cfg.dynamic_batching.max_queue_delay_microseconds == 1500
        else:  # the SAM decoders: one embedding + many prompt sets per call, no request axis
            assert py.max_batch_size == 0 and not py.HasField("dynamic_batching")
    assert batchable(b.graphs["sam_image_encoder"]) and batchable(b.graphs["audioclip_image"])


def test_avs_triton_repo_composed_cli(tmp_path, bundle, capsys):
    from avs.cli import main

    out = tmp_path / "repo"
    argv = ["triton-repo", str(bundle), str(out), "--composed", "--instances", "3"]
    assert main([*argv, "--graph-instances", "sam_image_encoder=2", "--queue-delay-us", "500"]) == 0
    text = (out / "sam_image_encoder" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in text and "count: 2" in text
    assert "max_queue_delay_microseconds: 500" in text
    assert "count: 3" in (out / "avs" / "config.pbtxt").read_text()
    assert main([*argv, "--force", "--graph-backend", "python"]) == 0
    assert 'backend: "python"' in (out / "acfpn" / "config.pbtxt").read_text()
    assert main([*argv, "--force", "--graph-instances", "nope=2"]) == 2
    assert "graph_instances names graphs ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--force", "--graph-instances", "sam_image_encoder=0"])


# --- parity ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_env_reference(tmp_path_factory, bundle, triton_env):
    """In-process results of every mode in the served models' own environment (numpy<2)."""
    out = tmp_path_factory.mktemp("reference")
    spec = [{"mode": m, "params": FAST_PARAMS.get(m, {})} for m in supported_modes(bundle)]
    subprocess.run(
        [
            str(triton_env.python),
            str(Path(__file__).resolve().parents[1] / "helpers" / "serve.py"),
            str(bundle),
            str(out),
            json.dumps(spec),
        ],
        check=True,
        timeout=600,
        env={**triton_env.process_env(), **THREADS_ENV},
    )
    return {
        m["mode"]: (
            np.load(out / f"{m['mode']}.npz")["masks"],
            json.loads((out / f"{m['mode']}.json").read_text()),
        )
        for m in spec
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_mode_composed_equals_in_process_bit_for_bit(
    server, bundle, served_env_reference, protocol
):
    frames, audio, rate = clip(2)
    url = server.http_url if protocol == "http" else server.grpc_url
    modes = supported_modes(bundle)
    assert {"heatmap", "acfpn", "no-prompt", "point-dense"} <= set(modes)
    with TritonClient(url, protocol, timeout=180) as c:
        for mode in modes:
            ref_masks, ref_info = served_env_reference[mode]
            got = c.segment(frames, audio, rate, mode=mode, **FAST_PARAMS.get(mode, {}))
            assert got.mode == mode and got.preset == ref_info["preset"]
            assert np.array_equal(np.stack(got.masks), ref_masks), mode
            assert got.prompts == [f["prompt"] for f in ref_info["frames"]], mode
            assert [f["score"] for f in got.info_json["frames"]] == [
                f["score"] for f in ref_info["frames"]
            ], mode
            assert got.random_weights is ref_info["random_weights"]
            # the served model warmed up every graph, so it may list optional ones the reference did not
            assert set(ref_info["providers"]) <= set(got.info_json["providers"]), mode
            assert set(got.info_json["providers"].values()) == {"CPUExecutionProvider"}
    # the graphs really ran in their own models
    assert stats(server, "sam_image_encoder")["inference_stats"]["success"]["count"] > 0
    assert stats(server, "acfpn")["inference_stats"]["success"]["count"] > 0


def test_8_concurrent_clients_get_encoder_calls_batched(server):
    """8 clients x 3 requests of distinct frames (no cache hits): the encoders' models run fewer
    executions than they get requests, i.e. calls of different requests were batched together."""
    before = {m: stats(server, m) for m in ("sam_image_encoder", "audioclip_image")}
    errors: list[str] = []

    def client(k: int) -> None:
        try:
            with TritonClient(server.http_url, timeout=300) as c:
                for j in range(3):
                    frames, audio, rate = clip(1, (32, 32), seconds=1.0, seed=100 + 10 * k + j)
                    r = c.segment(frames, audio, rate, mode="point-dense")
                    assert r.masks[0].shape == (32, 32)
        except Exception as e:  # reported below
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    for model, b in before.items():
        a = stats(server, model)
        requests = (
            a["inference_stats"]["success"]["count"] - b["inference_stats"]["success"]["count"]
        )
        executions = a["execution_count"] - b["execution_count"]
        assert requests >= 24, (model, requests)
        assert executions < requests, f"{model}: {executions} executions for {requests} requests"
        sizes = {s["batch_size"] for s in a["batch_stats"]}
        assert max(sizes) > 1, (model, sizes)


def _stub_pids(model: str, parent: int) -> list[int]:
    """PIDs of the python-backend stub processes of ``model`` that are children of ``parent``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"triton_python_backend_stub"):
            if any(f"/{model}/1/model.py".encode() in c for c in cmd):
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == parent:
                    pids.append(int(d.name))
    return pids


def test_a_killed_graph_model_fails_requests_with_a_clear_error(tmp_path, bundle, triton_env):
    srv = start(tmp_path, bundle, triton_env, instances=1)
    try:
        with TritonClient(srv.http_url, timeout=120) as c:
            frames, audio, rate = clip(1, (32, 32), seconds=1.0)
            c.segment(frames, audio, rate, mode="heatmap")
            pids = _stub_pids("audioclip_image", srv.proc.pid)  # this server's stub, one instance
            assert len(pids) == 1, pids
            os.kill(pids[0], signal.SIGKILL)
            for seed in (1, 2):  # new frames: the pipeline must call the dead model
                t0 = time.monotonic()
                with pytest.raises(RequestRejected, match="graph model 'audioclip_image'"):
                    c.segment(clip(1, (32, 32), seed=seed)[0], audio, rate, mode="heatmap")
                assert time.monotonic() - t0 < 60
            # a mode that does not need the dead graph is still served
            r = c.segment(clip(1, (32, 32), seed=3)[0], audio, rate, mode="acfpn")
            assert r.masks[0].shape == (32, 32)
    finally:
        srv.stop(10)


def test_avs_serve_composed_answers_the_curl_example(tmp_path, bundle, triton_env):
    """`avs serve --composed`: the printed curl example is answered; SIGINT stops it cleanly."""
    import shlex

    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "avs",
        "serve",
        str(bundle),
        "--composed",
        "--graph-instances",
        "sam_image_encoder=1",
        *("--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)),
        *("--threads", "1", "--exit-timeout", "10"),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **THREADS_ENV}
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        t_end = time.monotonic() + 300
        while time.monotonic() < t_end:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("avs serve: ready"):
                break
        out = "".join(lines)
        assert "avs serve: ready" in out and "composed: a BLS pipeline" in out, out[-3000:]
        curl = next(ln.strip() for ln in lines if ln.strip().startswith("curl "))
        argv = shlex.split(curl)
        url, body = argv[argv.index("-X") + 2], argv[argv.index("-d") + 1]
        req = urllib.request.Request(
            url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.loads(r.read())
        outs = {o["name"]: o for o in answer["outputs"]}
        assert outs["masks"]["shape"] == [1, 8, 8] and outs["masks"]["datatype"] == "BOOL"
        assert json.loads(outs["info"]["data"][0])["random_weights"] is True
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
