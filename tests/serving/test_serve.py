"""The served pipeline on a real tritonserver (the nvidia-pytriton wheel's, in .venv-triton, numpy<2).

One server (2 instances, 1 thread each, 8 MiB request limit) serves the whole module; the fault tests
start their own. Every server listens on 127.0.0.1 on free ports and is stopped by the test that started
it. The first run creates .venv-triton (pip, about two minutes); later runs reuse it (a stamp).
Set ``AVS_TEST_BUNDLE`` to reuse a built tiny bundle instead of building one.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime
from runtime.modes import MODES
from runtime.serving import repo, tritonenv, wire
from runtime.serving.client import RequestRejected, ServerUnavailable, TritonClient
from runtime.serving.server import TritonServer, free_port
from tests.helpers.serve import clip

MAX_MB = 8
# per-mode parameters that keep the tiny bundle fast (No-Prompt: a coarse point grid)
FAST_PARAMS = {"no-prompt": {"amg": {"points_per_side": 4}}}


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def rss_kb(pid: int) -> int:
    """RSS (KiB) of ``pid`` and all its descendants (the model stubs are tritonserver's children)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total


def start_server(
    tmp: Path,
    bundle: Path,
    env,
    *,
    instances: int = 1,
    ports=None,
    exit_timeout_s: int = 10,
    repo_dir: Path | None = None,
) -> TritonServer:
    rdir = repo_dir or tmp / "repo"
    if repo_dir is None:
        repo.write_avs_model(rdir, bundle, instances=instances, max_request_mb=MAX_MB, threads=1)
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    srv = TritonServer(
        rdir,
        env,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        log_path=tmp / "tritonserver.log",
        exit_timeout_s=exit_timeout_s,
        extra_env={"AVS_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    srv.start()
    try:
        srv.wait_ready(180)
    except Exception:
        srv.stop(5)
        raise
    return srv


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE")
    return Path(env) if env else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def triton_env():
    return tritonenv.ensure()


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle, triton_env):
    srv = start_server(tmp_path_factory.mktemp("serve"), bundle, triton_env, instances=2)
    yield srv
    srv.stop(15)


@pytest.fixture(scope="module")
def pipe(bundle):
    return runtime.load(bundle, threads=1)


def supported_modes(bundle: Path) -> list[str]:
    b = runtime.Bundle.open(bundle, verify=False)
    return [m for m, spec in MODES.items() if all(b.has(g) for g in spec.graphs)]


# --- repository and contract (no server) ------------------------------------------------------------


def test_avs_config_parses_with_tritons_schema(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    model = repo.write_avs_model(tmp_path, tmp_path, instances=3, max_request_mb=5, threads=2)
    cfg = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.name == wire.MODEL_NAME and cfg.backend == "python" and cfg.max_batch_size == 0
    assert [i.name for i in cfg.input] == list(wire.INPUT_NAMES)
    assert [o.name for o in cfg.output] == list(wire.OUTPUT_NAMES)
    assert all(i.optional for i in cfg.input)
    for t in list(cfg.input) + list(cfg.output):
        spec = wire.BY_NAME[t.name]
        assert model_config_pb2.DataType.Name(t.data_type) == spec.config_dtype
        assert tuple(t.dims) == spec.dims
    assert cfg.instance_group[0].count == 3
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.parameters["max_request_bytes"].string_value == str(5 * 2**20)
    assert (model / "1" / "model.py").is_file()


def test_client_reports_a_server_that_is_down():
    port = free_port()
    for proto in ("http", "grpc"):
        c = TritonClient(f"127.0.0.1:{port}", proto, timeout=3)
        assert not c.is_ready()
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable, match="is the server"):
            c.segment(*clip(1))
        assert time.monotonic() - t0 < 10
        c.close()


# --- parity ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_env_reference(tmp_path_factory, bundle, triton_env):
    """In-process results of every mode computed in the served model's own environment (numpy<2)."""
    out = tmp_path_factory.mktemp("reference")
    spec = [{"mode": m, "params": FAST_PARAMS.get(m, {})} for m in supported_modes(bundle)]
    subprocess.run(
        [
            str(triton_env.python),
            str(Path(__file__).parents[1] / "helpers" / "serve.py"),
            str(bundle),
            str(out),
            json.dumps(spec),
        ],
        check=True,
        timeout=600,
        env={**triton_env.process_env(), "OPENBLAS_NUM_THREADS": "1", "AVS_THREADS": "1"},
    )
    return {
        m["mode"]: (
            np.load(out / f"{m['mode']}.npz")["masks"],
            json.loads((out / f"{m['mode']}.json").read_text()),
        )
        for m in spec
    }


_here: dict[str, runtime.SegmentResult] = {}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_mode_matches_in_process_bit_for_bit(
    server, pipe, bundle, served_env_reference, protocol
):
    """Served masks equal the in-process runtime's bit for bit (the runtime run with the server's numpy).

    Against this process's runtime (numpy 2) masks may differ in a few pixels: the float32 image resize
    lands on x.5 before rounding to uint8 and the two numpy lines' BLAS round it differently.
    """
    frames, audio, rate = clip(2)
    url = server.http_url if protocol == "http" else server.grpc_url
    modes = supported_modes(bundle)
    assert {"heatmap", "acfpn"} <= set(modes)
    with TritonClient(url, protocol, timeout=120) as c:
        for mode in modes:
            params = FAST_PARAMS.get(mode, {})
            ref_masks, ref_info = served_env_reference[mode]
            got = c.segment(frames, audio, rate, mode=mode, **params)
            assert got.mode == mode == ref_info["mode"] and got.preset == ref_info["preset"]
            assert np.stack(got.masks).dtype == bool
            assert np.array_equal(np.stack(got.masks), ref_masks), mode
            assert got.prompts == [f["prompt"] for f in ref_info["frames"]], mode
            assert got.random_weights is ref_info["random_weights"]
            assert [f["score"] for f in got.info_json["frames"]] == [
                f["score"] for f in ref_info["frames"]
            ], mode
            # and the same as this process's runtime up to that rounding
            if mode not in _here:
                _here[mode] = pipe.segment(list(frames), audio, rate, mode=mode, **params)
            ref = _here[mode]
            assert got.preset == ref.preset
            differ = np.mean([np.mean(a != b) for a, b in zip(got.masks, ref.masks, strict=True)])
            assert differ <= 0.01, (
                f"{mode}: {100 * differ:.2f} % of pixels differ from the numpy-2 runtime"
            )
            assert len(got.prompts) == len(ref.prompts)


def test_encoded_frames_and_wav_equal_the_arrays_they_hold(server, pipe, tmp_path):
    """PNG frames + a 16-bit WAV give the masks of the same pixels and samples sent as arrays."""
    frames, audio, rate = clip(2)
    paths = []
    for i, f in enumerate(frames):
        paths.append(tmp_path / f"f{i}.png")
        paths[-1].write_bytes(png_bytes(f))
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(audio, rate))
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / np.float32(32768.0)
    with TritonClient(server.http_url, timeout=60) as c:
        got = c.segment(paths, wav, mode="heatmap")
        raw = c.segment(frames, pcm, rate, mode="heatmap")
    assert all(np.array_equal(a, b) for a, b in zip(got.masks, raw.masks, strict=True))
    assert got.prompts == raw.prompts
    ref = pipe.segment(
        paths, wav, mode="heatmap"
    )  # this process's runtime, up to rounding (see above)
    assert np.mean([np.mean(a != b) for a, b in zip(got.masks, ref.masks, strict=True)]) <= 0.01


def test_readme_curl_example_is_answered(server):
    """The README's example: its python3 one-liner makes the body, sent as curl sends it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme[readme.index("python3 -c 'import json") :]
    code = block[len("python3 -c '") : block.index("' |")]
    assert "http://127.0.0.1:8000/v2/models/avs/infer" in block[: block.index("```")]
    body = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=30
    ).stdout
    req = urllib.request.Request(
        f"http://{server.http_url}/v2/models/avs/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.loads(r.read())
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["masks"]["shape"] == [1, 8, 8] and out["masks"]["datatype"] == "BOOL"
    info = json.loads(out["info"]["data"][0])
    assert info["mode"] == "heatmap" and info["random_weights"] is True


def test_self_contained_avs_model_of_triton_repo_serves(tmp_path, bundle, triton_env):
    """The avs model that `avs triton-repo` writes runs from its own copies of the runtime and bundle."""
    import shutil

    from export.triton_repo import write_repository

    full = write_repository(bundle, tmp_path / "full")
    only = (
        tmp_path / "repo"
    )  # this tritonserver has no onnxruntime backend: serve the avs model alone
    shutil.copytree(full / "avs", only / "avs")
    text = (only / "avs" / "config.pbtxt").read_text()
    (only / "avs" / "config.pbtxt").write_text(
        text.replace(
            'key: "threads"\n  value: { string_value: "0" }',
            'key: "threads"\n  value: { string_value: "1" }',
        )
    )
    srv = start_server(tmp_path, bundle, triton_env, repo_dir=only)
    try:
        with TritonClient(srv.http_url, timeout=60) as c:
            r = c.segment(*clip(1, (16, 16), seconds=0.25), mode="heatmap")
        assert r.masks[0].shape == (16, 16) and r.random_weights
        assert str(only / "avs" / "1" / "bundle") in srv.log_tail(200)
    finally:
        srv.stop(10)


def test_avs_serve_prints_a_working_curl_example_and_stops_on_sigint(tmp_path, bundle, triton_env):
    """`avs serve`: ready line, URLs and the curl example; the example is answered; SIGINT stops it cleanly."""
    import shlex

    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "avs",
        "serve",
        str(bundle),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--threads",
        "1",
        "--exit-timeout",
        "10",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "AVS_THREADS": "1"}
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
        t_end = time.monotonic() + 180
        while time.monotonic() < t_end:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("avs serve: ready"):
                break
        out = "".join(lines)
        assert "avs serve: ready" in out, out[-3000:]
        assert (
            f"http://127.0.0.1:{http}" in out
            and f"127.0.0.1:{grpc}" in out
            and f":{metrics}/metrics" in out
        )
        curl = next(ln.strip() for ln in lines if ln.strip().startswith("curl "))
        argv = shlex.split(curl)
        url, body = argv[argv.index("-X") + 2], argv[argv.index("-d") + 1]
        req = urllib.request.Request(
            url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        assert {o["name"] for o in answer["outputs"]} == {"masks", "info"}
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest[-3000:]
        assert "server stopped" in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# --- bad requests ----------------------------------------------------------------------------------


def _bad_requests():
    frames, audio, rate = clip(1, (16, 16), seconds=0.5)
    good = {"frames": frames, "audio": audio, "sample_rate": np.array([rate], np.int32)}
    wav = wav_bytes(audio, rate)

    def b(x):
        return np.array([x], dtype=object)

    def with_(**kw):
        d = {**good, **kw}
        return {k: v for k, v in d.items() if v is not None}

    return [
        ("fp32 frames", with_(frames=frames.astype(np.float32)), "expects 'UINT8'"),
        ("frames of rank 3", with_(frames=frames[0]), "Expected [-1,-1,-1,3]"),
        ("zero frames", with_(frames=np.zeros((0, 16, 16, 3), np.uint8)), "at least 1 frame"),
        (
            "frame over the size limit",
            with_(frames=np.zeros((1, 8, 8200, 3), np.uint8)),
            "8192 px per side",
        ),
        (
            "too many frames",
            with_(frames=np.zeros((wire.MAX_FRAMES + 1, 8, 8, 3), np.uint8)),
            f"over the budget of {wire.MAX_FRAMES} frames",
        ),
        (
            "request over the byte limit",
            with_(audio=np.zeros(3 * 2**20, np.float32)),
            f"limit of {MAX_MB} MiB",
        ),
        (
            "truncated wav",
            with_(audio=None, sample_rate=None, audio_encoded=b(wav[:20])),
            "fmt or data chunk",
        ),
        (
            "not a wav",
            with_(audio=None, sample_rate=None, audio_encoded=b(b"ID3 this is an mp3, honest")),
            "RIFF/WAVE",
        ),
        ("nan audio", with_(audio=np.full(800, np.nan, np.float32)), "NaN"),
        ("unknown mode", with_(mode=b(b"telepathy")), "unknown mode 'telepathy'; choose from"),
        ("params not json", with_(params=b(b"{threshold: 0.5")), "expected a JSON object"),
        ("params not an object", with_(params=b(b"[0.5]")), "expected a JSON object"),
        (
            "unknown parameter",
            with_(mode=b(b"heatmap"), params=b(b'{"treshold": 0.5}')),
            "takes parameters",
        ),
        ("missing sample_rate", with_(sample_rate=None), "sample_rate: expected INT32 [1]"),
        ("no frames input", with_(frames=None), "exactly one of `frames`"),
        (
            "bad png",
            with_(frames=None, frames_encoded=b(b"\x89PNG\r\n\x1a\n garbage")),
            "PNG or JPEG",
        ),
    ], good


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_are_answered_and_the_next_request_is_served(server, protocol):
    cases, good = _bad_requests()
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol, timeout=60) as c:
        want = c.infer_raw({**good, "mode": np.array([b"heatmap"], dtype=object)})[0]
        for name, inputs, expected in cases:
            with pytest.raises(RequestRejected) as e:
                c.infer_raw(inputs)
            assert expected in str(e.value), f"{name}: {e.value}"
            masks, _ = c.infer_raw({**good, "mode": np.array([b"heatmap"], dtype=object)})
            assert np.array_equal(masks, want), name
    assert server.proc.poll() is None


# --- load and leaks --------------------------------------------------------------------------------


def _load(server, want: np.ndarray, n_clients: int, n_req: int, budget_s: float) -> None:
    """``n_clients`` threads (HTTP and gRPC alternately) x ``n_req`` heatmap requests; all must be served."""
    frames, audio, rate = clip(1, (16, 16), seconds=0.25)
    errors, served = [], [0] * n_clients

    def worker(k: int) -> None:
        try:
            proto = "http" if k % 2 == 0 else "grpc"
            with TritonClient(
                server.http_url if proto == "http" else server.grpc_url, proto, timeout=120
            ) as c:
                for _ in range(n_req):
                    r = c.segment(frames, audio, rate, mode="heatmap")
                    if not np.array_equal(r.masks[0], want):
                        raise AssertionError("mask differs from the first one")
                    served[k] += 1
        except Exception as e:  # collected and reported below
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n_clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, budget_s - (time.monotonic() - t0)))
    assert not any(t.is_alive() for t in threads), f"clients still running after {budget_s:.0f} s"
    assert errors == []
    assert served == [n_req] * n_clients


def _one(server) -> np.ndarray:
    with TritonClient(server.http_url, timeout=60) as c:
        return c.segment(*clip(1, (16, 16), seconds=0.25), mode="heatmap").masks[0]


def test_load_8_clients_x_25_requests_and_no_memory_growth(server):
    """20 sequential requests, then 8 concurrent clients x 25 requests: all served, zero errors, and the
    server's RSS (tritonserver + model instances) after them within 10 % of its RSS after the first 20."""
    want = _one(server)
    with TritonClient(server.http_url, timeout=60) as c:
        for _ in range(19):
            c.segment(*clip(1, (16, 16), seconds=0.25), mode="heatmap")
    rss20 = rss_kb(server.proc.pid)
    _load(server, want, 8, 25, budget_s=240)
    rss_end = rss_kb(server.proc.pid)
    assert rss_end <= 1.10 * rss20, f"RSS {rss20} KiB after 20 requests, {rss_end} KiB after 220"


@pytest.mark.slow
def test_server_memory_does_not_grow_over_200_sequential_requests(server):
    frames, audio, rate = clip(1, (16, 16), seconds=0.25)
    with TritonClient(server.http_url, timeout=60) as c:
        for i in range(200):
            c.segment(frames, audio, rate, mode="heatmap")
            if i + 1 == 20:
                rss20 = rss_kb(server.proc.pid)
        rss_end = rss_kb(server.proc.pid)
    assert rss_end <= 1.10 * rss20, f"RSS {rss20} KiB after 20 requests, {rss_end} KiB after 200"


# --- evaluation against the server ---------------------------------------------------------------


def test_avs_eval_server_scores_like_the_in_process_evaluation(server, bundle, tmp_path, capsys):
    from avs.cli import main as avs_main
    from evaluation.run import evaluate
    from models import avsbench
    from tests.helpers.avsbench import make_avsbench

    data = make_avsbench(tmp_path / "avsbench", "s4", videos_per_split=3, seed=1)
    out = tmp_path / "served"
    rc = avs_main(
        [
            "eval",
            "--server",
            server.grpc_url,
            "--protocol",
            "grpc",
            "--concurrency",
            "3",
            "--data-root",
            str(data),
            "--mode",
            "heatmap",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    served = json.loads((out / "summary.json").read_text())
    local = evaluate(bundle, data, kinds=("s4",), mode="heatmap", progress=False, threads=1)
    a, b = served["results"]["s4"], local["results"]["s4"]
    assert a["videos"] == b["videos"] == 3 and a["frames"] == b["frames"]
    # equal up to the numpy-1 vs numpy-2 rounding of the image resize (see the parity test)
    assert a["miou"] == pytest.approx(b["miou"], abs=0.01) and a["fscore"] == pytest.approx(
        b["fscore"], abs=0.01
    )
    assert served["random_weights"] and served["mode"] == "heatmap"
    assert "| ours: `heatmap`" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "per_video_s4_test.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == [r.name for r in avsbench.index_split(data, "s4", "test")]
    # acfpn is scored on logits, which the wire does not carry: refused with the reason
    assert (
        avs_main(["eval", "--server", server.http_url, "--data-root", str(data), "--mode", "acfpn"])
        == 2
    )
    assert "logits" in capsys.readouterr().err


# --- faults ----------------------------------------------------------------------------------------


def _in_flight(srv: TritonServer, n: int, timeout: float, results: list, mode: str = "point-dense"):
    """Start ``n`` client threads, each sending one 4-frame request; results get 'ok' or the exception."""
    frames, audio, rate = clip(4, (64, 64))

    def one(k: int) -> None:
        proto = "http" if k % 2 == 0 else "grpc"
        t0 = time.monotonic()
        try:
            with TritonClient(
                srv.http_url if proto == "http" else srv.grpc_url, proto, timeout=timeout
            ) as c:
                c.segment(frames, audio, rate, mode=mode)
            results.append(("ok", time.monotonic() - t0))
        except Exception as e:  # classified by the test
            results.append((e, time.monotonic() - t0))

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    return threads


def _wait_inflight(srv: TritonServer, at_least: int, timeout: float = 60) -> int:
    """Wait until the server's metrics show ``at_least`` requests pending; returns the count seen.

    Fails the test when they never are (a SIGTERM test with no request in flight proves nothing).
    """
    t_end = time.monotonic() + timeout
    pending = 0.0
    while time.monotonic() < t_end:
        try:
            with urllib.request.urlopen(srv.metrics_url, timeout=2) as r:
                text = r.read().decode()
            pending = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("nv_inference_pending_request_count")
            )
            if pending >= at_least:
                return int(pending)
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(
        f"only {pending:.0f} requests were pending after {timeout:.0f} s, {at_least} expected: "
        "the in-flight part of this test would prove nothing"
    )


def test_sigterm_lets_in_flight_requests_finish_then_sigkill_fails_clients_fast(
    tmp_path, bundle, triton_env
):
    srv = start_server(tmp_path, bundle, triton_env, instances=1, exit_timeout_s=60)
    ports = (srv.http_port, srv.grpc_port, srv.metrics_port)
    try:
        # SIGTERM while 4 requests are in flight: every one completes
        results: list = []
        threads = _in_flight(srv, 4, 120, results)
        _wait_inflight(srv, 3)
        os.kill(srv.proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(timeout=150)
        assert [r[0] for r in results] == ["ok"] * 4, results
        assert srv.wait(90) is not None, "server did not exit after SIGTERM"
        srv.stop(5)

        # SIGKILL while 4 clients are mid-request: each gets an error within its timeout
        srv = start_server(tmp_path, bundle, triton_env, ports=ports, repo_dir=tmp_path / "repo")
        results = []
        client_timeout = 60
        threads = _in_flight(srv, 4, client_timeout, results)
        _wait_inflight(srv, 2)
        srv.kill()
        for t in threads:
            t.join(timeout=client_timeout + 15)
        assert not any(t.is_alive() for t in threads), "a client hangs after the server died"
        assert len(results) == 4
        for outcome, secs in results:
            assert isinstance(outcome, ServerUnavailable), outcome
            assert secs < client_timeout + 5

        # a restarted server serves again
        srv = start_server(tmp_path, bundle, triton_env, ports=ports, repo_dir=tmp_path / "repo")
        with TritonClient(srv.grpc_url, "grpc", timeout=60) as c:
            assert c.is_ready()
            r = c.segment(*clip(1, (16, 16), seconds=0.25), mode="heatmap")
            assert r.masks[0].shape == (16, 16)
    finally:
        srv.stop(10)
