"""The CLIP byte-level BPE tokenizer (OpenAI CLIP's SimpleTokenizer behaviour), numpy output.

Text cleaning: ``ftfy.fix_text``, HTML unescaped twice, whitespace runs collapsed to one space,
stripped, lower-cased. Pre-tokenisation uses CLIP's pattern (the special tokens, the English
contractions 's 't 're 've 'm 'll 'd, letter runs, single digits, runs of other non-space
characters); every piece is mapped byte-wise to printable unicode, its last symbol gets the
``</w>`` suffix, and merges are applied lowest rank first.

Vocabulary: the 256 byte symbols, the same with ``</w>``, one symbol per merge, then
``<|startoftext|>`` and ``<|endoftext|>``. With the official ``bpe_simple_vocab_16e6.txt.gz``
(48,894 merges are used) that is 49,408 ids with SOT = 49406 and EOT = 49407.

The vocab file is not shipped with this project. :func:`find_vocab` looks, in order, at an
explicit path, the ``AVS_CLIP_BPE_VOCAB`` environment variable, and the copies shipped inside
installed wheels (``open_clip/``, ``clip/``, ``laion_clap/clap_module/``) on ``sys.path``.
The official file's sha256 is :data:`OFFICIAL_VOCAB_SHA256` (compare with ``models.checkpoints.sha256_file``).
"""

from __future__ import annotations

import gzip
import html
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "OFFICIAL_VOCAB_SHA256",
    "VOCAB_ENV",
    "VOCAB_NAME",
    "ClipTokenizer",
    "find_vocab",
    "tokenize",
]

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_ENV = "AVS_CLIP_BPE_VOCAB"
OFFICIAL_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# Where installed packages ship the file, relative to a sys.path entry.
_WHEEL_LOCATIONS = (
    f"open_clip/{VOCAB_NAME}",
    f"clip/{VOCAB_NAME}",
    f"laion_clap/clap_module/{VOCAB_NAME}",
)
# CLIP uses the merges on lines 1 .. 48894 of the file (line 0 is a version header).
MAX_MERGES = 49152 - 256 - 2
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def find_vocab(path: str | os.PathLike | None = None) -> Path:
    """Locate the BPE merges file: ``path`` if given, else $AVS_CLIP_BPE_VOCAB, else a copy inside
    an installed wheel (open_clip_torch, openai-clip, laion-clap) on ``sys.path``.

    Raises FileNotFoundError listing every place looked at.
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / VOCAB_NAME
        if not p.is_file():
            raise FileNotFoundError(f"CLIP BPE vocab not found at {p}")
        return p
    looked: list[str] = []
    env = os.environ.get(VOCAB_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            p = p / VOCAB_NAME
        if p.is_file():
            return p
        looked.append(f"${VOCAB_ENV}={env}")
    else:
        looked.append(f"${VOCAB_ENV} (unset)")
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        for rel in _WHEEL_LOCATIONS:
            p = Path(entry) / rel
            if p.is_file():
                return p
        looked.append(entry)
    raise FileNotFoundError(
        f"CLIP BPE vocab {VOCAB_NAME} not found. Pass its path, set ${VOCAB_ENV}, or install a wheel "
        f"that ships it (open_clip_torch: open_clip/{VOCAB_NAME}). Looked at: "
        + "; ".join(looked[:1] + [f"{e}/{{{','.join(_WHEEL_LOCATIONS)}}}" for e in looked[1:]])
    )


@lru_cache
def _byte_table() -> dict[int, str]:
    """Reversible byte -> printable unicode character table of GPT-2/CLIP byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # Insertion order is the vocab order: printable bytes ascending, then the remapped ones.
    return table


def _clean(text: str) -> str:
    import ftfy
    import regex

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def _read_merges(path: Path) -> list[tuple[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = []
    for n, line in enumerate(lines[1 : MAX_MERGES + 1], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: line {n} is not a merge pair 'a b': {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class ClipTokenizer:
    """CLIP BPE tokenizer over a merges file (the official one, or a small one for tests).

    ``vocab_path``: a ``.txt.gz`` or ``.txt`` merges file (first line a header, then one
    ``"a b"`` merge per line) or None to search with :func:`find_vocab`.
    """

    def __init__(self, vocab_path: str | os.PathLike | None = None):
        import regex

        self.vocab_path = find_vocab(vocab_path)
        merges = _read_merges(self.vocab_path)
        symbols = list(_byte_table().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TEXT, EOT_TEXT]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = _byte_table()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.sot_token = self.encoder[SOT_TEXT]
        self.eot_token = self.encoder[EOT_TEXT]
        self.vocab_size = len(vocab)
        self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)
        self._cache: dict[str, list[str]] = {SOT_TEXT: [SOT_TEXT], EOT_TEXT: [EOT_TEXT]}

    def _bpe(self, piece: str) -> list[str]:
        """Merge the byte symbols of one pre-token; the last symbol carries ``</w>``."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = set(zip(word[:-1], word[1:], strict=True))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        if len(self._cache) < 100_000:
            self._cache[piece] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Text -> BPE ids (no SOT/EOT), after CLIP's cleaning and lower-casing."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in self._pattern.findall(_clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(mapped))
        return ids

    def decode(self, ids) -> str:
        """BPE ids -> text (``</w>`` becomes a space; special tokens are kept verbatim)."""
        text = "".join(self.decoder[int(i)] for i in ids)
        out = bytearray()
        for ch in text:
            if ch in self.byte_decoder:
                out.append(self.byte_decoder[ch])
            else:  # only reached for characters outside the byte table (none in CLIP's vocab)
                out.extend(ch.encode("utf-8"))
        return out.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts, context_length: int = 77, truncate: bool = False) -> np.ndarray:
        """texts: a str or a list of str -> int64 array [N, context_length].

        Each row is [SOT, BPE ids..., EOT] followed by zeros. A text longer than
        ``context_length`` (SOT and EOT included) raises ValueError, as CLIP's ``tokenize`` does
        (RuntimeError there); with ``truncate=True`` it is cut to ``context_length`` ids and the
        last one replaced by EOT (the newer openai/CLIP ``truncate`` behaviour).
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a str or a list of str")
        if not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an int >= 2, got {context_length!r}")
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token, *self.encode(text), self.eot_token]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"text {row} ({text[:40]!r}...) has {len(ids)} tokens with SOT/EOT, more than "
                        f"context_length {context_length}; pass truncate=True to cut it"
                    )
                ids = ids[:context_length]
                ids[-1] = self.eot_token
            out[row, : len(ids)] = ids
        return out


@lru_cache(maxsize=4)
def _default_tokenizer(path: str | None) -> ClipTokenizer:
    return ClipTokenizer(path)


def tokenize(
    texts: list[str] | str,
    context_length: int = 77,
    *,
    truncate: bool = False,
    vocab_path: str | os.PathLike | None = None,
) -> np.ndarray:
    """CLIP tokens of ``texts``: int64 [N, context_length], [SOT, ids..., EOT, 0, ...].

    Uses the vocab found by :func:`find_vocab` (``vocab_path`` overrides; tokenizers are cached).
    See :meth:`ClipTokenizer.__call__` for the truncation rule.
    """
    path = str(find_vocab(vocab_path))
    return _default_tokenizer(path)(texts, context_length=context_length, truncate=truncate)
