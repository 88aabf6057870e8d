"""``avs triton-repo``: every config.pbtxt parses with Triton's own schema; deploy/kubernetes agrees with it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from avs.cli import main as avs_main
from runtime.bundle import Bundle
from runtime.serving import wire

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE")
    return Path(env) if env else request.getfixturevalue("tiny_bundle")


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


@pytest.mark.parametrize("gpu", [False, True])
def test_repository_configs_parse_and_match_the_bundle(tmp_path, bundle, gpu):
    out = tmp_path / "repo"
    args = ["triton-repo", str(bundle), str(out), "--instances", "2"] + (["--gpu"] if gpu else [])
    assert avs_main(args) == 0
    b = Bundle.open(bundle)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        [wire.MODEL_NAME, *b.graphs]
    )
    assert (out / ".avs-triton-repo").is_file()  # its marker: --force replaces only such a folder
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU

    avs = parse(out / "avs" / "config.pbtxt")
    assert avs.backend == "python" and avs.max_batch_size == 0
    assert [i.name for i in avs.input] == list(wire.INPUT_NAMES)
    assert [o.name for o in avs.output] == list(wire.OUTPUT_NAMES)
    assert avs.instance_group[0].count == 2 and avs.instance_group[0].kind == kind
    assert avs.parameters["bundle"].string_value == "bundle"
    # self-contained: the runtime and a verified copy of the bundle sit next to model.py
    version = out / "avs" / "1"
    assert (version / "model.py").is_file() and (
        version / "runtime" / "serving" / "triton_model.py"
    ).is_file()
    Bundle.open(version / "bundle", verify=True)

    for name, entry in b.graphs.items():
        cfg = parse(out / name / "config.pbtxt")
        assert (
            cfg.name == name and cfg.backend == "onnxruntime"
        )  # the tiny bundle has no TensorRT plans
        assert (out / name / "1" / "model.onnx").is_file()
        batched = all(t["shape"][0] == "batch" for t in entry["inputs"] + entry["outputs"])
        assert cfg.max_batch_size == (8 if batched else 0), name
        assert cfg.HasField("dynamic_batching") == batched, name
        for tensors, specs in ((cfg.input, entry["inputs"]), (cfg.output, entry["outputs"])):
            assert [t.name for t in tensors] == [s["name"] for s in specs]
            for t, s in zip(tensors, specs, strict=True):
                shape = s["shape"][1:] if batched else s["shape"]
                assert list(t.dims) == [d if isinstance(d, int) else -1 for d in shape], (
                    name,
                    t.name,
                )
                assert t.data_type == mc.TYPE_FP32
        assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == kind
    # the encoders batch dynamically
    assert {"audioclip_audio", "audioclip_image"} <= {
        n for n in b.graphs if parse(out / n / "config.pbtxt").HasField("dynamic_batching")
    }


def test_triton_repo_refuses_to_overwrite(tmp_path, bundle, capsys):
    (tmp_path / "repo").mkdir()
    assert avs_main(["triton-repo", str(bundle), str(tmp_path / "repo")]) == 2
    assert "--force" in capsys.readouterr().err


def _docs() -> dict[str, dict]:
    docs = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            docs[d["kind"]] = d
    return docs


def test_kubernetes_manifests_agree_with_the_repository(tmp_path, bundle):
    docs = _docs()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(docs)
    dep, svc, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = dict(a.lstrip("-").split("=", 1) for a in c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    # the ports avs serve and the client use by default
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert (args["http-port"], args["grpc-port"], args["metrics-port"]) == ("8000", "8001", "8002")
    assert args["model-control-mode"] == "none"
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert args["model-repository"] == mount["model-repo"]
    # probes: Triton's health endpoints on the http port; start-up waits for the avs model itself
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == f"/v2/models/{wire.MODEL_NAME}/ready"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["cpu"]
    # the model the probes name is one that triton-repo writes
    out = tmp_path / "repo"
    assert avs_main(["triton-repo", str(bundle), str(out), "--gpu"]) == 0
    assert (out / wire.MODEL_NAME / "config.pbtxt").is_file()
    # the Service exposes the same named ports and selects the Deployment's pods
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports
    assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    # the image is built FROM the official Triton container
    assert "FROM nvcr.io/nvidia/tritonserver:" in (K8S / "Dockerfile").read_text()


def test_readme_documents_the_wire_contract():
    readme = (REPO / "README.md").read_text()
    assert wire.markdown_table() in readme
