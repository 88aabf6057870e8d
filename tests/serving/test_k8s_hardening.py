"""The Kubernetes manifests parse and carry the hardening of issue 18 (no cluster needed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from runtime.budget import DEFAULT_BUDGET
from runtime.serving import wire
from runtime.serving.server import ADMIN_APIS, ADMIN_KEY_HEADER

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def docs() -> dict[str, dict]:
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            assert d and "kind" in d, f
            out[d["kind"]] = d
    return out


def _gi(q: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Mi)", q)
    assert m, q
    return float(m[1]) / (1024 if m[2] == "Mi" else 1)


def test_pod_and_container_security_context():
    pod = docs()["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc.get("privileged", False) is False
    # scratch lives in emptyDirs (the root file system is read-only)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in vols[mounts["/tmp"]] and "emptyDir" in vols[mounts["/dev/shm"]]
    assert all(m.get("readOnly") for m in c["volumeMounts"] if m["mountPath"] == "/models")


def test_triton_is_pinned_and_locked_down():
    (c,) = docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    image = c["image"]
    assert ":" in image and not image.endswith(":latest")
    base = re.search(
        r"^FROM nvcr\.io/nvidia/tritonserver:(\d+)\.(\d+)-py3$",
        (K8S / "Dockerfile").read_text(),
        re.M,
    )
    assert base, "the Dockerfile must pin the official image by a release tag"
    assert (int(base[1]), int(base[2])) >= (25, 7), (
        "older than the release that fixed the python backend"
    )
    assert image.endswith(f":{base[1]}.{base[2]}"), "the Deployment's tag names its Triton release"
    flags = {}
    for a in c["args"]:
        k, _, v = a.lstrip("-").partition("=")
        flags.setdefault(k, []).append(v)
    assert flags["model-control-mode"] == ["none"]
    for flag in ("http-restricted-api", "grpc-restricted-protocol"):
        (v,) = flags[flag]
        apis, _, kv = v.partition(":")
        assert set(apis.split(",")) == set(ADMIN_APIS), flag
        assert kv == f"{ADMIN_KEY_HEADER}=$(AVS_ADMIN_KEY)", flag
    env = {e["name"]: e for e in c["env"]}
    assert env["AVS_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "avs-admin-key"


def test_resources_match_the_request_budget():
    (c,) = docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    lim, req = c["resources"]["limits"], c["resources"]["requests"]
    # one request at the budget's bounds: its decoded frames and their float32 copies (4x), on top
    # of about 3 GiB of sessions and 2 GiB of Triton
    need = 4 * DEFAULT_BUDGET.max_decoded_mb / 1024 + 3 + 2
    assert _gi(lim["memory"]) >= need and _gi(req["memory"]) <= _gi(lim["memory"])
    assert "ephemeral-storage" in lim


def test_network_policy_and_ingress_cap_the_way_in():
    d = docs()
    pol = d["NetworkPolicy"]
    assert pol["spec"]["podSelector"]["matchLabels"] == {"app": "avs-triton"}
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"} and pol["spec"]["egress"] == []
    ports = {p["port"] for rule in pol["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {8000, 8001, 8002}
    ing = d["Ingress"]
    body = ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body == f"{wire.DEFAULT_MAX_REQUEST_MB}m", "the gateway caps bodies at the model's limit"
    paths = {p["path"]: p["pathType"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths == {f"/v2/models/{wire.MODEL_NAME}/infer": "Exact", "/v2/health/ready": "Exact"}
    secret = d["Secret"]
    assert secret["metadata"]["name"] == "avs-admin-key"
    assert "REPLACE" in secret["stringData"]["key"], "never commit a real key"
