"""LAION-CLAP (non-fusion, HTSAT audio tower + RoBERTa text tower) built offline, and its tokenizers.

The network classes are laion-clap's own (``laion_clap.clap_module.model.CLAP``), imported without
running the package's ``__init__`` (which pulls in its training code: webdataset, wandb, pandas, and
module-level ``from_pretrained`` tokenizers that reach for the Hugging Face hub). The RoBERTa text
model is built from :data:`ROBERTA_BASE_CONFIG`, a config written here, instead of
``RobertaModel.from_pretrained('roberta-base')``; the official checkpoint then fills every weight.

Tokenizers come from a folder the user gives or from the local Hugging Face cache, and are checked
by :func:`check_tokenizer`. Under ``HF_HUB_OFFLINE=1`` transformers 5 silently returns a tokenizer
whose vocabulary holds only its 5 special tokens ("a dog barking" becomes ``[<s>, </s>]``);
embedding labels with such a tokenizer gives meaningless text features. It is refused here with
:class:`TokenizerError`, never used.

Official non-fusion checkpoints (:data:`CLAP_CHECKPOINTS`): ``630k-audioset-best.pt`` (the one the
reference uses) and ``630k-best.pt`` are HTSAT-tiny; the ``music_*`` files are HTSAT-base.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoints import CheckpointError, load_checkpoint, load_strict, sha256_file
from models.registry import ConfigRegistry

CLAP_SAMPLE_RATE = 48000
CLAP_CLIP_SAMPLES = 480000  # 10 s at 48 kHz: the audio tower's fixed input
CLAP_CONTEXT_LENGTH = 77  # RoBERTa tokens per label (padding="max_length", truncation)

# roberta-base's architecture (facts of the public config), so nothing is fetched from the hub.
ROBERTA_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# laion-clap's HTSAT audio configurations (model_configs/HTSAT-*.json), written here.
_HTSAT_AUDIO = {
    "audio_length": 1024,
    "clip_samples": CLAP_CLIP_SAMPLES,
    "mel_bins": 64,
    "sample_rate": CLAP_SAMPLE_RATE,
    "window_size": 1024,
    "hop_size": 480,
    "fmin": 50,
    "fmax": 14000,
    "class_num": 527,
    "model_type": "HTSAT",
}
CLAP_CONFIGS: dict[str, dict[str, Any]] = {
    "HTSAT-tiny": {"embed_dim": 768, "audio_cfg": {**_HTSAT_AUDIO, "model_name": "tiny"}},
    "HTSAT-base": {"embed_dim": 1024, "audio_cfg": {**_HTSAT_AUDIO, "model_name": "base"}},
}
CLAP = ConfigRegistry("CLAP", CLAP_CONFIGS)
# name -> deep copy; UnknownConfigError (a KeyError and ValueError) lists the known names
get_config = CLAP.get_config
list_configs = CLAP.list_configs
_TEXT_CFG = {
    "context_length": CLAP_CONTEXT_LENGTH,
    "vocab_size": 49408,
    "width": 512,
    "heads": 8,
    "layers": 12,
    "model_type": "roberta",
}

# Released non-fusion checkpoints -> audio model.
CLAP_CHECKPOINTS: dict[str, str] = {
    "630k-audioset-best.pt": "HTSAT-tiny",
    "630k-best.pt": "HTSAT-tiny",
    "music_audioset_epoch_15_esc_90.14.pt": "HTSAT-base",
    "music_speech_audioset_epoch_15_esc_89.98.pt": "HTSAT-base",
    "music_speech_epoch_15_esc_89.25.pt": "HTSAT-base",
}
DEFAULT_CLAP_CHECKPOINT = "630k-audioset-best.pt"

TOKENIZER_REPOS = {"roberta": "roberta-base", "bert": "bert-base-uncased"}
_PROBE_TEXTS = ("a dog barking", "speech", "music")


class TokenizerError(ValueError):
    """A tokenizer is missing, or is the degenerate offline fallback (special tokens only)."""


# --- importing laion-clap's classes without its package __init__ ------------------------------------


def laion_clap_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """laion-clap's ``clap_module.model`` and ``clap_module.htsat`` modules.

    Imported through placeholder package objects so that neither ``laion_clap/__init__.py`` (hook,
    training code, hub tokenizers) nor ``clap_module/__init__.py`` (factory, losses, torchvision
    transforms) runs. Needs the ``laion-clap`` distribution (installed with ``--no-deps``) plus
    torchlibrosa, h5py and transformers. Raises ImportError with an install hint otherwise.
    """
    if "laion_clap.clap_module.model" not in sys.modules:
        spec = importlib.util.find_spec("laion_clap")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                "laion-clap is not installed: pip install --no-deps laion-clap "
                "torchlibrosa h5py transformers (see docs/box-prompt.md)"
            )
        root = Path(list(spec.submodule_search_locations)[0])
        for name, path in (("laion_clap", root), ("laion_clap.clap_module", root / "clap_module")):
            if name not in sys.modules:
                mod = types.ModuleType(name)
                mod.__path__ = [str(path)]
                mod.__file__ = str(path / "__init__.py")
                sys.modules[name] = mod
    model = importlib.import_module("laion_clap.clap_module.model")
    htsat = importlib.import_module("laion_clap.clap_module.htsat")
    return model, htsat


class _FromConfig:
    """Stand-in for a transformers model class whose ``from_pretrained`` builds from a config."""

    def __init__(self, cls, config):
        self.cls, self.config = cls, config

    def from_pretrained(self, *args, **kwargs):  # noqa: D401 - mimics the transformers API
        return self.cls(self.config)


@contextlib.contextmanager
def _patched(module: types.ModuleType, **attrs) -> Iterator[None]:
    old = {k: getattr(module, k) for k in attrs}
    try:
        for k, v in attrs.items():
            setattr(module, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def roberta_config(**overrides: Any):
    """A ``transformers.RobertaConfig``: roberta-base's architecture, with ``overrides`` applied."""
    from transformers import RobertaConfig

    return RobertaConfig(**{**ROBERTA_BASE_CONFIG, **overrides})


def build_clap(
    amodel: str = "HTSAT-tiny",
    *,
    text_config=None,
    htsat: dict[str, Any] | None = None,
    embed_dim: int | None = None,
    joint_embed_shape: int = 512,
    seed: int = 0,
) -> nn.Module:
    """A laion-clap ``CLAP`` (non-fusion) with seeded random weights, built without the hub.

    amodel: "HTSAT-tiny" (the reference's) or "HTSAT-base". text_config: a ``RobertaConfig`` for
    the text tower (default roberta-base's, :data:`ROBERTA_BASE_CONFIG`; the CLAP text projection
    needs hidden_size 768). htsat: keyword arguments for a smaller ``HTSAT_Swin_Transformer`` (tests:
    embed_dim, depths, num_heads, window_size); then ``embed_dim`` must be its output width
    (embed_dim * 2 ** (len(depths) - 1)). Returns the model in eval mode.
    """
    cfg = get_config(amodel)
    from transformers import RobertaModel

    model_mod, htsat_mod = laion_clap_modules()
    tcfg = text_config if text_config is not None else roberta_config()
    if getattr(tcfg, "hidden_size", None) != 768:
        raise ValueError(
            "CLAP's text projection takes 768-wide RoBERTa features: text_config.hidden_size must be 768"
        )
    patches: dict[str, Any] = {"RobertaModel": _FromConfig(RobertaModel, tcfg)}
    if htsat is not None:
        if embed_dim is None:
            raise ValueError("with a custom htsat configuration, give embed_dim (its output width)")

        def small_htsat(audio_cfg, enable_fusion=False, fusion_type="None"):
            return htsat_mod.HTSAT_Swin_Transformer(
                spec_size=256,
                patch_size=4,
                patch_stride=(4, 4),
                num_classes=audio_cfg.class_num,
                config=audio_cfg,
                enable_fusion=False,
                fusion_type="None",
                **htsat,
            )

        patches["create_htsat_model"] = small_htsat
    torch.manual_seed(seed)
    with _patched(model_mod, **patches):
        model = model_mod.CLAP(
            embed_dim=int(embed_dim if embed_dim is not None else cfg["embed_dim"]),
            audio_cfg=dict(cfg["audio_cfg"]),
            text_cfg=dict(_TEXT_CFG),
            quick_gelu=False,
            enable_fusion=False,
            fusion_type="None",
            joint_embed_shape=joint_embed_shape,
        )
    return model.eval()


def clap_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The CLAP weights of an official checkpoint, keys as the ``CLAP`` module names them.

    Read with ``torch.load(weights_only=True)``; a ``module.`` prefix (DDP) is stripped and
    ``text_branch.embeddings.position_ids`` (a buffer that transformers >= 4.31 no longer stores) is
    dropped, as laion-clap's own loader does.
    """
    sd = load_checkpoint(path)
    if sd and next(iter(sd)).startswith("module."):
        sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    sd.pop("text_branch.embeddings.position_ids", None)
    return sd


def load_clap(
    path: str | Path | None = None, *, amodel: str | None = None, seed: int = 0, **build_kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """CLAP with an official non-fusion checkpoint (strict key check), or seeded random weights.

    path: e.g. ``630k-audioset-best.pt``; None gives random weights. amodel: the audio model
    (default: from :data:`CLAP_CHECKPOINTS` by file name, else HTSAT-tiny).
    Returns (model in eval mode, provenance dict for the bundle manifest).
    """
    if path is None:
        model = build_clap(amodel or "HTSAT-tiny", seed=seed, **build_kwargs)
        return model, {"source": "random-init", "seed": seed, "config": amodel or "HTSAT-tiny"}
    path = Path(path)
    amodel = amodel or CLAP_CHECKPOINTS.get(path.name, "HTSAT-tiny")
    sd = clap_state_dict(path)
    if any(k.startswith("audio_branch.mel_conv") or "fusion_model" in k for k in sd):
        raise CheckpointError(
            f"{path} is a fusion CLAP checkpoint; only non-fusion checkpoints are supported"
        )
    model = build_clap(amodel, seed=seed, **build_kwargs)
    load_strict(model, sd, source=str(path))
    return model.eval(), {
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "config": amodel,
    }


class ClapAudioEmbedding(nn.Module):
    """The ``clap_audio`` graph: waveform float32 [B, 480000] (10 s, 48 kHz, already repeat-padded)
    -> L2-normalised audio embedding float32 [B, 512].

    Non-fusion CLAP's eval path: ``normalize(audio_projection(audio_branch({'waveform': x})['embedding']))``,
    which is what ``CLAP.get_audio_embedding`` computes.
    """

    def __init__(self, clap: nn.Module):
        super().__init__()
        if getattr(clap, "enable_fusion", False):
            raise ValueError("only non-fusion CLAP models are supported")
        self.audio_branch = clap.audio_branch
        self.audio_projection = clap.audio_projection

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        feats = self.audio_branch({"waveform": waveform}, mixup_lambda=None, device=waveform.device)
        return F.normalize(self.audio_projection(feats["embedding"]), dim=-1)


@torch.no_grad()
def clap_text_embeddings(
    clap: nn.Module, tokenizer, labels: Sequence[str], *, batch: int = 64
) -> torch.Tensor:
    """L2-normalised CLAP text embeddings of ``labels`` (raw strings, no prompt template): float32 [N, 512].

    As laion-clap's ``get_text_embedding``: RoBERTa tokens padded to 77 (truncated), pooler output,
    text projection, L2 normalisation. ``tokenizer`` must pass :func:`check_tokenizer`.
    """
    labels = list(labels)
    if not labels or not all(isinstance(s, str) and s.strip() for s in labels):
        raise ValueError("labels must be a non-empty list of non-empty strings")
    vocab = clap.text_branch.embeddings.word_embeddings.num_embeddings
    check_tokenizer(tokenizer, expected_vocab=vocab, what="CLAP text (roberta)")
    out = []
    for i in range(0, len(labels), batch):
        tok = tokenizer(
            labels[i : i + batch],
            padding="max_length",
            truncation=True,
            max_length=CLAP_CONTEXT_LENGTH,
            return_tensors="pt",
        )
        out.append(
            clap.get_text_embedding(
                {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
            )
        )
    return torch.cat(out)


# --- tokenizers ------------------------------------------------------------------------------------


def check_tokenizer(
    tokenizer, *, expected_vocab: int | None = None, what: str = "tokenizer"
) -> None:
    """Refuse a tokenizer that cannot tokenize real text.

    Raises :class:`TokenizerError` when the vocabulary holds nothing but special tokens (the
    5-token fallback transformers 5 returns offline), when ordinary words map only to special or
    unknown tokens, or when the vocabulary size differs from ``expected_vocab`` (the text model's
    embedding table: 50265 for roberta-base, 30522 for bert-base-uncased).
    """
    try:
        n = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        unk = tokenizer.unk_token_id
    except (AttributeError, TypeError) as e:
        raise TokenizerError(
            f"{what}: not a transformers tokenizer ({type(tokenizer).__name__})"
        ) from e
    hint = (
        "this is the degenerate tokenizer transformers returns when the hub is unreachable "
        "(HF_HUB_OFFLINE); give the folder of the real tokenizer files (vocab.json + merges.txt "
        "for roberta-base, vocab.txt for bert-base-uncased): see docs/box-prompt.md"
    )
    if n <= len(special) + 1:
        raise TokenizerError(f"{what}: vocabulary of {n} tokens holds only special tokens; {hint}")
    for text in _PROBE_TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        content = [i for i in ids if i not in special and i != unk]
        if not content:
            raise TokenizerError(
                f"{what}: {text!r} tokenizes to special/unknown tokens only ({ids}); {hint}"
            )
    if expected_vocab is not None and n != int(expected_vocab):
        raise TokenizerError(
            f"{what}: tokenizer vocabulary has {n} tokens but the text model's embedding "
            f"table has {expected_vocab}; give the tokenizer that belongs to the model"
        )


def find_tokenizer_folder(kind: str, folder: str | Path | None = None) -> Path:
    """The folder of the ``kind`` ("roberta" or "bert") tokenizer files.

    folder: a folder holding the tokenizer (``roberta-base`` or ``bert-base-uncased`` files), or a
    parent folder with a subfolder of that name. Without it, the local Hugging Face cache
    (``HF_HOME`` / ``HF_HUB_CACHE``) is searched, without network access. Raises TokenizerError.
    """
    if kind not in TOKENIZER_REPOS:
        raise ValueError(f"kind must be one of {sorted(TOKENIZER_REPOS)}, got {kind!r}")
    repo = TOKENIZER_REPOS[kind]
    if folder is not None:
        folder = Path(folder)
        for cand in (folder / repo, folder):
            if cand.is_dir() and any(
                (cand / f).is_file()
                for f in ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer_config.json")
            ):
                return cand
        raise TokenizerError(
            f"no {repo} tokenizer files in {folder} (nor in {folder / repo}): expected "
            "tokenizer.json, or vocab.json + merges.txt (roberta), or vocab.txt (bert)"
        )
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo, local_files_only=True, allow_patterns=["*.json", "*.txt", "*.model"]
        )
        return Path(path)
    except Exception as e:  # not in the cache (or hub library missing)
        raise TokenizerError(
            f"the {repo} tokenizer is not in the local Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}) "
            f"and no folder was given: pass --tokenizers DIR with a {repo}/ subfolder "
            f"(see docs/box-prompt.md)"
        ) from e


def load_tokenizer(
    kind: str, folder: str | Path | None = None, *, expected_vocab: int | None = None
):
    """Load and check the ``kind`` tokenizer ("roberta" for CLAP, "bert" for GroundingDINO).

    See :func:`find_tokenizer_folder` for ``folder``; the result passes :func:`check_tokenizer`
    (``expected_vocab``: the text model's vocabulary size, if known).
    """
    from transformers import AutoTokenizer

    path = find_tokenizer_folder(kind, folder)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise TokenizerError(
            f"cannot load the {TOKENIZER_REPOS[kind]} tokenizer from {path}: {e}"
        ) from e
    check_tokenizer(
        tok, expected_vocab=expected_vocab, what=f"{TOKENIZER_REPOS[kind]} tokenizer ({path})"
    )
    return tok


# The small test configuration: the same classes, a 4-stage HTSAT of width 8 and a 1-layer RoBERTa.
TEST_TINY_HTSAT: dict[str, Any] = {
    "embed_dim": 8,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 2],
    "window_size": 8,
}


def build_clap_test_tiny(vocab_size: int, *, seed: int = 0) -> nn.Module:
    """The "test-tiny" CLAP: laion-clap's classes with a small HTSAT (output width 64) and a 1-layer
    RoBERTa (hidden 768, as the text projection needs) over a ``vocab_size``-token vocabulary; 512-d joint space."""
    tcfg = roberta_config(
        vocab_size=int(vocab_size),
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=CLAP_CONTEXT_LENGTH + 3,
    )
    return build_clap(
        "HTSAT-tiny", text_config=tcfg, htsat=dict(TEST_TINY_HTSAT), embed_dim=64, seed=seed
    )


# --- tiny tokenizers for tests and the tiny build profile (random-weight models only) ---------------

_TINY_WORDS = (
    "dog",
    "cat",
    "speech",
    "music",
    "car",
    "bark",
    "man",
    "woman",
    "engine",
    "siren",
    "guitar",
    "piano",
    "bird",
    "water",
    "singing",
    "speaking",
    "male",
    "female",
    "child",
    "baby",
)


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character map of GPT-2 / RoBERTa byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_tiny_tokenizer(kind: str, folder: str | Path):
    """Write a small but real tokenizer of ``kind`` ("roberta": byte-level BPE with every byte and a
    few merges; "bert": WordPiece over letters, digits, punctuation and a few words) into ``folder``
    and return it loaded. For random-weight test models only: its ids mean nothing to real weights.
    """
    from transformers import BertTokenizer, RobertaTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "roberta":
        import json

        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for c in _bytes_to_unicode().values():
            vocab.setdefault(c, len(vocab))
        merges = []
        for w in _TINY_WORDS:
            cur = "\u0120" + w[0]  # a word after a space starts with the byte-level space
            merges.append(f"\u0120 {w[0]}")
            vocab.setdefault(cur, len(vocab))
            for ch in w[1:]:
                merges.append(f"{cur} {ch}")
                cur += ch
                vocab.setdefault(cur, len(vocab))
        merges = list(dict.fromkeys(merges))
        vocab["<mask>"] = len(vocab)
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (folder / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
        )
        tok = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    elif kind == "bert":
        words = [
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            *".?,()-'&/:;!\"",
            *"abcdefghijklmnopqrstuvwxyz0123456789",
        ]
        words += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + list(_TINY_WORDS)
        (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(words)) + "\n", encoding="utf-8")
        tok = BertTokenizer(str(folder / "vocab.txt"))
    else:
        raise ValueError(f"kind must be 'roberta' or 'bert', got {kind!r}")
    tok.save_pretrained(str(folder))
    return tok
