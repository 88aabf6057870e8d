"""A served endpoint no request can take down (issue 18), on the real local tritonserver.

One server for the module: 1 instance, 1 thread, a 20 s deadline, the operator key below. It checks
that the non-inference endpoint categories are refused without the key over HTTP and gRPC (health
and metadata open), that error responses carry no server paths, that a 0.3 MiB request of huge
blank PNGs is refused from the headers with the server's memory bounded, that a request past its
deadline is cancelled with a clear error while the next one is served, and that served masks equal
in-process masks (numpy 2 here, numpy<2 in the server) for 16-bit PNG, EXIF-6 JPEG, MPO and arrays.
"""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime
from runtime.budget import DEFAULT_BUDGET
from runtime.modes import MODES
from runtime.serving import repo, wire
from runtime.serving.client import RequestRejected, TritonClient
from runtime.serving.server import (
    ADMIN_APIS,
    ADMIN_KEY_HEADER,
    GRPC_ADMIN_KEY_HEADER,
    TritonServer,
    free_port,
)
from tests.helpers.serve import clip
from tests.serving.test_same_answer import exif6_jpeg, mpo, png16  # noqa: E402
from tests.serving.test_serve import bundle, rss_kb, triton_env  # noqa: E402,F401  (fixtures)

KEY = "operator-key-0123456789"
DEADLINE_S = 20


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, bundle, triton_env):  # noqa: F811
    tmp = tmp_path_factory.mktemp("hardened")
    repo.write_avs_model(
        tmp / "repo",
        bundle,
        threads=1,
        max_request_mb=8,
        budget=DEFAULT_BUDGET.replace(deadline_s=DEADLINE_S),
        max_queue=4,
        queue_timeout_s=120,
    )
    srv = TritonServer(
        tmp / "repo",
        triton_env,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp / "tritonserver.log",
        exit_timeout_s=5,
        admin_key=KEY,
        extra_env={"AVS_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    srv.start()
    try:
        srv.wait_ready(180)
        yield srv
    finally:
        srv.stop(10)


def _http(srv, method: str, path: str, key: str | None) -> int:
    headers = {ADMIN_KEY_HEADER: key} if key else {}
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(
        f"http://{srv.http_url}{path}", method=method, headers=headers, data=data
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


RESTRICTED_HTTP = {  # one endpoint of every category in ADMIN_APIS
    "shared-memory": ("GET", "/v2/systemsharedmemory/status"),
    "model-config": ("GET", "/v2/models/avs/config"),
    "model-repository": ("POST", "/v2/repository/index"),
    "statistics": ("GET", "/v2/models/stats"),
    "trace": ("GET", "/v2/trace/setting"),
    "logging": ("GET", "/v2/logging"),
}


def test_every_admin_category_is_refused_without_the_key_over_http(hardened):
    assert set(RESTRICTED_HTTP) == set(ADMIN_APIS)
    for cat, (method, path) in RESTRICTED_HTTP.items():
        assert _http(hardened, method, path, None) == 403, cat
        assert _http(hardened, method, path, "wrong-key-0123456789") == 403, cat
        assert _http(hardened, method, path, KEY) == 200, cat
    for path in ("/v2/health/ready", "/v2/health/live", "/v2", "/v2/models/avs"):
        assert _http(hardened, "GET", path, None) == 200, path  # probes and metadata stay open


def test_every_admin_category_is_refused_without_the_key_over_grpc(hardened):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = grpcclient.InferenceServerClient(hardened.grpc_url)
    calls = {
        "shared-memory": lambda h: c.get_system_shared_memory_status(headers=h),
        "model-config": lambda h: c.get_model_config("avs", headers=h),
        "model-repository": lambda h: c.get_model_repository_index(headers=h),
        "statistics": lambda h: c.get_inference_statistics("avs", headers=h),
        "trace": lambda h: c.get_trace_settings(headers=h),
        "logging": lambda h: c.get_log_settings(headers=h),
    }
    assert set(calls) == set(ADMIN_APIS)
    for cat, call in calls.items():
        try:
            call(None)
        except InferenceServerException as e:
            assert "restricted" in str(e) or "header" in str(e), (cat, str(e))
        else:
            pytest.fail(f"{cat}: answered over gRPC without the key")
        call({GRPC_ADMIN_KEY_HEADER: KEY})  # the operator gets through
    assert c.is_server_ready() and c.get_model_metadata("avs").name == "avs"
    c.close()


def test_error_responses_carry_no_server_paths(hardened, bundle):  # noqa: F811
    frames, audio, rate = clip(2)
    b = runtime.Bundle.open(bundle, verify=False)
    if all(b.has(g) for g in MODES["box"].graphs):
        pytest.skip("this bundle has the Box-Prompt graphs: no mode names the bundle in its error")
    with TritonClient(hardened.http_url, timeout=60) as c:
        with pytest.raises(RequestRejected) as e:
            c.segment(frames, audio, rate, mode="box")  # "... which bundle <path> lacks"
    msg = str(e.value)
    assert "lacks" in msg and "<bundle>" in msg, msg
    for path in (str(Path(bundle).resolve()), str(bundle), str(hardened.repo)):
        assert path not in msg, msg
    assert "internal error" not in msg


def test_a_small_request_of_huge_pngs_is_refused_and_the_server_stays_small(hardened):
    buf = io.BytesIO()
    Image.new("1", (8192, 4882), 0).save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    _, audio, rate = clip(2)
    inputs = {
        "frames_encoded": np.array([png] * 64, dtype=object),
        "audio": audio,
        "sample_rate": np.array([rate], np.int32),
    }
    before = rss_kb(hardened.proc.pid)
    with TritonClient(hardened.http_url, timeout=120) as c:
        t0 = time.monotonic()
        with pytest.raises(RequestRejected, match="MP in all, over the budget"):
            c.infer_raw(inputs)
        assert time.monotonic() - t0 < 60
        after = rss_kb(hardened.proc.pid)
        # one such frame decoded alone is 120 MiB (3 bytes x 40 MP); all 64 were 7.2 GiB
        assert after - before < 150 * 1024, f"server RSS grew by {(after - before) / 1024:.0f} MiB"
        masks, _ = c.infer_raw({**inputs_of(clip(2)), "mode": np.array([b"heatmap"], dtype=object)})
        assert masks.shape == (2, 48, 64)
    assert hardened.proc.poll() is None


def inputs_of(c) -> dict:
    frames, audio, rate = c
    return {"frames": frames, "audio": audio, "sample_rate": np.array([rate], np.int32)}


def test_a_request_past_its_deadline_is_cancelled_and_the_next_is_served(hardened):
    # No-Prompt with a 32 x 32 grid on 8 frames: about a minute or more on the tiny bundle (2 cores)
    frames, audio, rate = clip(8, (64, 64))
    with TritonClient(hardened.http_url, timeout=300) as c:
        t0 = time.monotonic()
        with pytest.raises(RequestRejected, match=f"deadline of {DEADLINE_S} s"):
            c.segment(frames, audio, rate, mode="no-prompt", amg={"points_per_side": 32})
        took = time.monotonic() - t0
        r = c.segment(*clip(1, (16, 16), seconds=0.25), mode="heatmap")
        assert r.masks[0].shape == (16, 16)
    # cancelled within one decoder batch of the deadline (generous: a loaded 2-core machine)
    assert took < DEADLINE_S + 60, took


@pytest.mark.parametrize("mode", ["heatmap", "point-dense"])
def test_served_masks_equal_in_process_masks_for_encoded_files_and_arrays(
    hardened,
    bundle,  # noqa: F811
    tmp_path,
    mode,
):
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (48, 64), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, format="PNG")
    files = {
        "png16": [buf.getvalue(), png16(40000, (48, 64))],
        "exif6": [exif6_jpeg((64, 48), seed=1), exif6_jpeg((64, 48), seed=2)],
        "mpo": [mpo((48, 64)), mpo((48, 64))],
    }
    pipe = runtime.load(bundle, threads=1)  # in-process: numpy 2; the server runs numpy<2
    _, audio, rate = clip(2)
    with TritonClient(hardened.http_url, timeout=120) as c:
        for name, raws in files.items():
            paths = []
            for i, raw in enumerate(raws):
                p = tmp_path / f"{name}{i}.img"
                p.write_bytes(raw)
                paths.append(p)
            want = pipe.segment(paths, audio, rate, mode=mode).masks
            got, _ = c.infer_raw(
                {
                    "frames_encoded": np.array(raws, dtype=object),
                    "audio": audio,
                    "sample_rate": np.array([rate], np.int32),
                    "mode": np.array([mode.encode()], dtype=object),
                }
            )
            assert got.shape == (2, *want[0].shape), name
            assert np.array_equal(got, np.stack(want)), (
                f"{name}: {int((got != np.stack(want)).sum())} px differ"
            )
        frames = rng.integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
        want = np.stack(pipe.segment(list(frames), audio, rate, mode=mode).masks)
        got = c.segment(frames, audio, rate, mode=mode).masks
        assert np.array_equal(np.stack(got), want), "raw arrays differ"


def test_the_model_config_has_a_queue_policy_and_the_budget(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    model = repo.write_avs_model(tmp_path, tmp_path, max_queue=7, queue_timeout_s=2.5)
    cfg = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    q = cfg.dynamic_batching.default_queue_policy
    assert q.max_queue_size == 7 and q.default_timeout_microseconds == 2_500_000
    assert q.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert not q.allow_timeout_override and cfg.max_batch_size == 0
    from runtime.serving.triton_model import budget_from_parameters

    params = {k: v.string_value for k, v in cfg.parameters.items()}
    b = budget_from_parameters(params)
    assert b == DEFAULT_BUDGET.replace(deadline_s=120.0)
    assert wire.MAX_FRAMES == b.max_frames
