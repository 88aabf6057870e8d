"""File-system safety (issue 18, finding 5): manifest files contained and hash-checked when read,
symlinks refused in bundles and repositories, malformed entries a BundleError, the tools delete only
folders they wrote, ``.part`` files never written through a planted link.

Before: a plan path ``../../../etc/hostname`` was copied into a model repository; ``copytree``
followed symlinks; ``build_engines.py`` deleted any non-empty ``--out`` that held a ``manifest.json``
even without ``--force``; ``avs triton-repo --force`` deleted any folder; ``.part`` files followed
planted symlinks; malformed ``extra_files`` crashed ``Bundle.open`` with a TypeError/KeyError.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from runtime.bundle import Bundle
from runtime.errors import BundleError
from runtime.media.outputs import save_png_atomic, write_atomic
from runtime.safefiles import copy_checked, inside, mark_owned, open_exclusive, remove_owned


@pytest.fixture(scope="module")
def source_bundle(request) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE")
    return Path(env) if env else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def work_bundle(tmp_path_factory, source_bundle) -> Path:
    """A private copy of the tiny bundle that the tests below may damage (manifest restored)."""
    dst = tmp_path_factory.mktemp("fs") / "bundle"
    shutil.copytree(source_bundle, dst)
    return dst


@pytest.fixture
def bundle(work_bundle):
    manifest = (work_bundle / "manifest.json").read_text()
    yield work_bundle
    (work_bundle / "manifest.json").write_text(manifest)


def edit(bundle: Path, change) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    change(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def small_graph(bundle: Path) -> str:
    m = json.loads((bundle / "manifest.json").read_text())
    return min(m["graphs"], key=lambda g: m["graphs"][g]["bytes"])


def test_a_plan_outside_the_bundle_is_refused(bundle, tmp_path):
    g = small_graph(bundle)

    def plan(m):
        m["graphs"][g]["tensorrt"] = {"file": "../../../etc/hostname", "sha256": "0" * 64}

    edit(bundle, plan)
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.open(bundle)
    from export.triton_repo import write_repository

    with pytest.raises(BundleError, match="outside the bundle"):
        write_repository(bundle, tmp_path / "repo", gpu=True)
    assert not (tmp_path / "repo").exists()


def test_a_plan_is_hash_checked(bundle):
    g = small_graph(bundle)
    (bundle / "fake.plan").write_bytes(b"not the plan that was built")

    def plan(m):
        m["graphs"][g]["tensorrt"] = {"file": "fake.plan", "sha256": "0" * 64, "bytes": 27}

    edit(bundle, plan)
    with pytest.raises(BundleError, match="fails its checksum"):
        Bundle.open(bundle)


@pytest.mark.parametrize(
    "extra",
    [[1], [{"file": 3, "sha256": "x"}], "weights.bin", [{"file": "w.bin"}], [None], {"file": "a"}],
)
def test_malformed_extra_files_are_a_bundle_error(bundle, extra):
    g = small_graph(bundle)
    edit(bundle, lambda m: m["graphs"][g].__setitem__("extra_files", extra))
    with pytest.raises(BundleError, match="extra_files"):
        Bundle.open(bundle)


def test_symlinks_inside_a_bundle_are_refused(bundle, tmp_path):
    g = small_graph(bundle)
    name = json.loads((bundle / "manifest.json").read_text())["graphs"][g]["file"]
    real = bundle / name
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy2(real, outside)
    os.rename(real, tmp_path / "original.onnx")
    try:
        real.symlink_to(outside)  # same bytes, same sha256: only the link is wrong
        with pytest.raises(BundleError, match="symbolic link"):
            Bundle.open(bundle)
    finally:
        real.unlink()
        os.rename(tmp_path / "original.onnx", real)
    Bundle.open(bundle)  # restored


def test_graph_bytes_are_checked_when_read(bundle):
    b = Bundle.open(bundle)
    g = small_graph(bundle)
    path = b.graph_path(g)
    data = path.read_bytes()
    try:
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(BundleError, match="fails its checksum"):
            b.graph_bytes(g)
        with pytest.raises(BundleError, match="fails its checksum"):
            b.read_file(b.graphs[g])
    finally:
        path.write_bytes(data)


def test_inside_refuses_escapes(tmp_path):
    root = tmp_path / "bundle"  # need not exist: inside() checks names, not files
    for bad in ("", "/etc/passwd", "../x", "a/../../x", None, 3):
        with pytest.raises(BundleError):
            inside(root, bad)
    assert inside(root, "a/b.onnx") == root / "a" / "b.onnx"


def test_copies_are_hash_checked_and_never_overwrite(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    import hashlib

    good = hashlib.sha256(b"payload").hexdigest()
    copy_checked(src, tmp_path / "ok", good)
    assert (tmp_path / "ok").read_bytes() == b"payload"
    with pytest.raises(BundleError, match="fails its checksum"):
        copy_checked(src, tmp_path / "bad", "0" * 64)
    assert not (tmp_path / "bad").exists()
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(BundleError, match="cannot read"):
        copy_checked(link, tmp_path / "via-link", good)


def test_part_files_are_never_written_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".result.json.part").symlink_to(victim)
    (out / ".mask.png.part").symlink_to(victim)
    write_atomic(out / "result.json", "{}")
    import numpy as np

    save_png_atomic(out / "mask.png", np.zeros((8, 8), np.uint8))
    assert victim.read_text() == "precious"
    assert (out / "result.json").read_text() == "{}" and not (out / "result.json").is_symlink()
    assert (out / "mask.png").stat().st_size > 0
    with open_exclusive(out / "new") as f:
        f.write(b"x")
    assert (out / "new").read_bytes() == b"x"


def test_only_folders_with_the_marker_are_removed(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    mark_owned(mine, ".m")
    (theirs / "data").write_text("keep")
    remove_owned(mine, ".m", what="this tool")
    assert not mine.exists()
    with pytest.raises(FileExistsError, match="not written by this tool"):
        remove_owned(theirs, ".m", what="this tool")
    assert (theirs / "data").read_text() == "keep"
    link = tmp_path / "link"
    link.symlink_to(theirs)
    (theirs / ".m").write_text("")
    with pytest.raises(FileExistsError):
        remove_owned(link, ".m", what="this tool")  # never through a link
    assert (theirs / "data").exists()


def test_build_engines_never_deletes_a_folder_it_did_not_build(tmp_path):
    from export.build_engines import main

    out = tmp_path / "somebody-elses"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # looks like a bundle, was not built here
    (out / "thesis.tex").write_text("keep")
    assert main(["--profile", "tiny", "--out", str(out), "--quiet"]) == 2
    assert main(["--profile", "tiny", "--out", str(out), "--quiet", "--force"]) == 2
    assert (out / "thesis.tex").read_text() == "keep"


def test_triton_repo_force_replaces_only_its_own_repository(bundle, tmp_path, capsys):
    from avs.cli import main as avs_main

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    assert avs_main(["triton-repo", str(bundle), str(other), "--force"]) == 2
    assert "not written by avs triton-repo" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "keep"
    out = tmp_path / "repo"
    assert avs_main(["triton-repo", str(bundle), str(out)]) == 0
    (out / "stale").write_text("")
    assert avs_main(["triton-repo", str(bundle), str(out), "--force"]) == 0
    assert not (out / "stale").exists() and (out / "avs" / "config.pbtxt").is_file()
    # the self-contained copy holds exactly the manifest's files, none of them a link
    copied = out / "avs" / "1" / "bundle"
    files = {p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()}
    b = Bundle.open(bundle)
    assert files == {"manifest.json", *(e["file"] for e in b._all_file_entries())}
    assert not any(p.is_symlink() for p in out.rglob("*"))
