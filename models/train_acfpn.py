"""Train AC-FPN on AVSBench S4 / MS3 (spec sam4avs-reference 1.5-1.6).

Recipe (reference release scripts): Adam (betas 0.9/0.999, eps 1e-8, no weight decay), constant
LR 5e-5 for neck + head and 5e-6 (x0.1) for the visual tower, the audio tower frozen; BCE on the
sigmoid of the logits, S4 on the frame-1 prediction of each video only (the one train mask), MS3
on all 5 frames; 70 (S4) / 200 (MS3) epochs of batches of 4 videos (= 20 frames); after every
epoch the val mIoU (one video per batch) decides which checkpoint is kept; seed 123. After
training, the best checkpoint is evaluated on ``test`` (mIoU and F-score).

Two audio behaviours:

- default (clean): the audio tower is in eval mode under ``no_grad`` and the waveform is scaled
  by 32768 (AudioCLIP's int16 convention); the embeddings are then a fixed function of the clip
  and are cached per video across epochs;
- ``--paper``: the reference's quirks: no x32768 scale, audio BN in train mode (batch statistics,
  running statistics updated and saved in the checkpoint), gradients computed for the audio
  tower (not stepped), the loss as ``BCELoss(sigmoid(z))`` (the clean default uses the equal but
  stable ``BCEWithLogits``).

Audio per video: the 16 kHz wav is read as librosa does (int16 / 32768, channel mean), resampled
to 44.1 kHz with soxr "soxr_hq" and padded/truncated to ceil(T * 44100 / sr) (librosa's
``fix_length``), forced to 5 s (longer: truncated; shorter: whole seconds kept, then copies of the
last 44100 samples appended; shorter than 1 s: the clip repeated end to end to fill 1 s first,
where the reference would give each chunk the whole clip, 5 x len samples after tiling), split
into five 1-s chunks (chunk k for frame k) and each chunk tiled 5x (220500 samples).

Frames: CLIP preprocessing of ``runtime.preprocess.image.clip_preprocess`` (identity resize for the 224 x 224
AVSBench frames; other sizes: shorter side to 224 bicubic + centre crop). Mixed precision
(fp16 autocast + GradScaler) only on CUDA; the audio tower always runs in float32.

Usage::

    python -m models.train_acfpn --data-root avsbench_data --split-kind s4 \\
        --checkpoint-dir pretrained/AudioCLIP-Full-Training.pt --out runs/s4_hadamard
    python -m models.train_acfpn ... --resume runs/s4_hadamard/last.pt
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from models import avsbench
from models.acfpn import ACFPN, FUSIONS, canonical_fusion, read_acfpn_checkpoint, save_acfpn
from models.checkpoints import CheckpointError
from models.registry import (
    AUDIOCLIP_SAMPLE_RATE,
    CLIP_MEAN,
    CLIP_STD,
    get_config,
    list_configs,
)
from runtime.preprocess.audio import INT16_SCALE, prepare_audioclip_audio

__all__ = [
    "DEFAULT_EPOCHS",
    "SEED",
    "AVSBenchVideos",
    "evaluate",
    "main",
    "make_optimizer",
    "parse_args",
    "prepare_audio",
    "prepare_frames",
    "segmentation_loss",
    "train_step",
]

DEFAULT_EPOCHS = {"s4": 70, "ms3": 200}
SEED = 123
CHUNKS = avsbench.FRAMES_PER_VIDEO  # one 1-s chunk per frame
DEFAULT_TILE = 5  # each 1-s chunk repeated to AudioCLIP's 5-s clip length


# ------------------------------------------------------------------------------------------------
# preprocessing (numpy)


def prepare_audio(
    wav_path: str | Path,
    *,
    tile: int = DEFAULT_TILE,
    input_scale: float = INT16_SCALE,
    rate: int = AUDIOCLIP_SAMPLE_RATE,
) -> np.ndarray:
    """Audio tower input of one AVSBench video: float32 [5, tile * rate].

    Row k is the 1-s chunk of frame k + 1 repeated ``tile`` times, times ``input_scale`` (32768:
    AudioCLIP's int16 units; 1.0: the reference's [-1, 1] input). Missing file: FileNotFoundError.
    """
    path = avsbench.need_file(wav_path, "audio")
    # the runtime's own reader, resampler and chunker: training and serving feed the same input
    return prepare_audioclip_audio(
        path,
        None,
        CHUNKS,
        target_rate=rate,
        chunk_seconds=1.0,
        tile=int(tile),
        input_scale=float(input_scale),
    )


def prepare_frames(
    paths: Sequence[str | Path],
    *,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> np.ndarray:
    """CLIP input of frame files: float32 [N, 3, size, size], (x / 255 - mean) / std per channel.

    Frames of another size get ``runtime.preprocess.image.clip_preprocess``'s shorter-side bicubic resize and
    centre crop. Missing file: FileNotFoundError naming it.
    """
    from runtime.preprocess.image import clip_preprocess  # numpy only; runtime never imports models

    frames = [avsbench.load_frame(p) for p in paths]
    return clip_preprocess(frames, size=size, mean=mean, std=std)


class AVSBenchVideos(Dataset):
    """Torch dataset of one AVSBench split, one item per video.

    Item: {"images": float32 [5, 3, S, S] (CLIP-normalised), "audio": float32 [5, tile*44100],
    "masks": float32 [M, S, S] in {0, 1}, "mask_frames": int64 [M] (0-based frame index of each
    mask: [0] for S4 train, [0..4] otherwise), "name": str}.
    """

    def __init__(
        self,
        root: str | Path,
        kind: str,
        split: str,
        *,
        max_videos: int | None = None,
        tile: int = DEFAULT_TILE,
        input_scale: float = INT16_SCALE,
        image_size: int = 224,
        check_files: bool = False,
    ):
        self.records = avsbench.index_split(root, kind, split, check_files=check_files)
        if max_videos is not None:
            self.records = self.records[: int(max_videos)]
        if not self.records:
            raise ValueError(f"no {kind.upper()} videos in split {split!r} under {root}")
        self.kind, self.split = kind, split
        self.tile, self.input_scale, self.image_size = (
            int(tile),
            float(input_scale),
            int(image_size),
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        images = prepare_frames(r.frames, size=self.image_size)
        audio = prepare_audio(r.wav, tile=self.tile, input_scale=self.input_scale)
        masks = np.stack([avsbench.load_mask(p, r.kind) for p in r.masks]).astype(np.float32)
        if masks.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(
                f"{r.masks[0]}: mask is {masks.shape[1:]}, expected {self.image_size}x{self.image_size}"
            )
        return {
            "images": torch.from_numpy(images),
            "audio": torch.from_numpy(audio),
            "masks": torch.from_numpy(masks),
            "mask_frames": torch.tensor([k - 1 for k in r.mask_frames], dtype=torch.int64),
            "name": r.name,
        }


# ------------------------------------------------------------------------------------------------
# training pieces


def make_optimizer(
    model: ACFPN, lr: float = 5e-5, backbone_lr_mult: float = 0.1
) -> torch.optim.Adam:
    """Adam with the reference's two groups: neck + head at ``lr``, the visual tower at
    ``lr * backbone_lr_mult``; no weight decay; the audio tower is not in the optimizer."""
    groups = model.trained_parameters()
    return torch.optim.Adam(
        [
            {"params": groups["head"], "lr": lr, "name": "neck+head"},
            {"params": groups["backbone"], "lr": lr * backbone_lr_mult, "name": "visual"},
        ],
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
    )


def segmentation_loss(
    logits: torch.Tensor, masks: torch.Tensor, *, paper: bool = False
) -> torch.Tensor:
    """Mean pixel BCE of ``sigmoid(logits)`` against ``masks``.

    ``logits``: [N, 1, H, W] float; ``masks``: [N, H, W] or [N, 1, H, W] float in {0, 1}.
    ``paper``: ``BCELoss(sigmoid(z))`` as the reference (log clamped at -100); otherwise the
    numerically stable ``BCEWithLogits`` (equal where the sigmoid does not saturate).
    Computed in float32.
    """
    if masks.dim() == 3:
        masks = masks[:, None]
    if logits.shape != masks.shape:
        raise ValueError(
            f"logits {list(logits.shape)} and masks {list(masks.shape)} differ in shape"
        )
    z, y = logits.float(), masks.float()
    if paper:
        return F.binary_cross_entropy(torch.sigmoid(z), y)
    return F.binary_cross_entropy_with_logits(z, y)


def _flatten_batch(batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
    images = batch["images"].to(device, non_blocking=True)
    audio = batch["audio"].to(device, non_blocking=True)
    masks = batch["masks"].to(device, non_blocking=True)
    mf = batch["mask_frames"].to(device)
    b, f = images.shape[:2]
    idx = (torch.arange(b, device=device)[:, None] * f + mf).reshape(-1)  # frame of every mask
    return (
        images.reshape(b * f, *images.shape[2:]),
        audio.reshape(b * f, audio.shape[-1]),
        masks.reshape(-1, *masks.shape[2:]),
        idx,
    )


class AudioCache:
    """Audio embeddings per video name (valid only while the audio tower is frozen in eval mode)."""

    def __init__(self) -> None:
        self.store: dict[str, torch.Tensor] = {}

    def embed(self, model: ACFPN, names: Sequence[str], audio: torch.Tensor) -> torch.Tensor:
        """names: B video names; audio: [B*5, T] -> embeddings [B*5, D] float32."""
        per = audio.shape[0] // len(names)
        todo = [i for i, n in enumerate(names) if n not in self.store]
        if todo:
            sel = torch.cat([audio[i * per : (i + 1) * per] for i in todo])
            emb = model.encode_audio(sel).detach()
            for j, i in enumerate(todo):
                self.store[names[i]] = emb[j * per : (j + 1) * per]
        return torch.cat([self.store[n] for n in names])


def _audio_embedding(
    model: ACFPN, batch: Mapping[str, Any], audio: torch.Tensor, cache: AudioCache | None
) -> torch.Tensor:
    with torch.autocast(device_type=audio.device.type, enabled=False):
        if cache is not None and model.audio_mode == "frozen":
            return cache.embed(model, list(batch["name"]), audio.float())
        return model.encode_audio(audio.float())


def train_step(
    model: ACFPN,
    batch: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    *,
    paper: bool = False,
    device: torch.device | str = "cpu",
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    cache: AudioCache | None = None,
) -> float:
    """One optimisation step on a collated batch of videos; returns the loss (float).

    Only the frames that have a mask enter the loss (S4 train: frame 1 of each video); batch
    statistics of every frame still shape the BN layers. ``amp_dtype`` (CUDA only) runs visual,
    neck and head under autocast; the audio tower always runs in float32.
    """
    device = torch.device(device)
    images, audio, masks, idx = _flatten_batch(batch, device)
    a = _audio_embedding(model, batch, audio, cache)
    ctx = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else nullcontext()
    )
    with ctx:
        logits = model(images, a)
    loss = segmentation_loss(logits[idx], masks, paper=paper)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(
    model: ACFPN,
    loader: DataLoader,
    *,
    device: torch.device | str = "cpu",
    fscore: bool = False,
    amp_dtype: torch.dtype | None = None,
    cache: AudioCache | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """AVSBench metrics of ``model`` (set to eval mode) over ``loader`` (batch = 1 video for the
    paper's numbers): {"miou", "fscore" (if asked), "videos"}; each is the mean of per-batch
    values (``evaluation.metrics``)."""
    from evaluation import metrics  # numpy only (a leaf: imports runtime.errors alone)

    device = torch.device(device)
    was_training = model.training
    model.eval()
    mious, fs = [], []
    try:
        for batch in _bar(loader, progress, desc):
            images, audio, masks, idx = _flatten_batch(batch, device)
            a = _audio_embedding(model, batch, audio, cache)
            ctx = (
                torch.autocast(device_type=device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else nullcontext()
            )
            with ctx:
                logits = model(images, a)
            z = logits[idx][:, 0].float().cpu().numpy()
            g = masks.cpu().numpy()
            mious.append(metrics.miou(z, g))
            if fscore:
                fs.append(metrics.fscore(z, g))
    finally:
        model.train(was_training)
    out = {"miou": float(np.mean(mious)) if mious else float("nan"), "videos": len(mious)}
    if fscore:
        out["fscore"] = float(np.mean(fs)) if fs else float("nan")
    return out


def _bar(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (CPU and CUDA), as the reference does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The CLI (see module docstring); ``argv`` None reads ``sys.argv``."""
    p = argparse.ArgumentParser(
        prog="python -m models.train_acfpn", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data-root",
        required=True,
        help="AVSBench data folder (holding Single-source/, Multi-sources/)",
    )
    p.add_argument("--split-kind", choices=avsbench.KINDS, default="s4")
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="AudioCLIP-Full-Training.pt (or its folder) for both towers; omitted: random init",
    )
    p.add_argument(
        "--fusion", default="hadamard", help=f"one of {sorted(FUSIONS)} (or reference names)"
    )
    p.add_argument("--config", default="audioclip", choices=list_configs())
    p.add_argument("--epochs", type=int, default=None, help="default 70 (S4) / 200 (MS3)")
    p.add_argument("--batch-size", type=int, default=4, help="videos per batch (x5 frames)")
    p.add_argument(
        "--lr",
        type=float,
        default=5e-5,
        help="neck + head LR; the visual tower gets lr x backbone mult",
    )
    p.add_argument("--backbone-lr-mult", type=float, default=0.1)
    p.add_argument(
        "--out",
        required=True,
        help="output folder: best.pt, last.pt, history.jsonl, test_metrics.json",
    )
    p.add_argument("--resume", default=None, help="a last.pt written by this script")
    p.add_argument(
        "--paper",
        action="store_true",
        help="reference quirks: audio BN in train mode, no x32768 input scale, audio grads computed",
    )
    p.add_argument("--max-videos", type=int, default=None, help="use at most N videos per split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument(
        "--amp",
        choices=["auto", "off", "fp16", "bf16"],
        default="auto",
        help="autocast on CUDA (auto = fp16 + GradScaler); always off on CPU",
    )
    p.add_argument(
        "--audio-tile",
        type=int,
        default=DEFAULT_TILE,
        help="times each 1-s chunk is repeated (5 = the reference's 5-s clips)",
    )
    p.add_argument(
        "--no-audio-cache",
        action="store_true",
        help="recompute frozen audio embeddings every epoch",
    )
    p.add_argument(
        "--neck-channels", type=int, default=None, help=argparse.SUPPRESS
    )  # tests: narrow decoder
    p.add_argument("--head-channels", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-test", action="store_true", help="no final test-split evaluation")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = p.parse_args(argv)
    try:
        args.fusion = canonical_fusion(args.fusion)
    except ValueError as e:
        p.error(str(e))
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[args.split_kind]
    for name in ("epochs", "batch_size", "audio_tile"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_videos is not None and args.max_videos < 1:
        p.error("--max-videos must be >= 1")
    return args


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here")
    return dev


def _amp(choice: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if device.type != "cuda" or choice == "off":
        return None, False
    if choice == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`AVSBenchVideos` for the CLI arguments (the input scale is
    1.0 with ``--paper``, 32768 otherwise)."""
    return {
        "max_videos": args.max_videos,
        "tile": args.audio_tile,
        "input_scale": 1.0 if args.paper else INT16_SCALE,
        "image_size": int(get_config(args.config)["image_size"]),
    }


def build_model(args: argparse.Namespace) -> ACFPN:
    """ACFPN for the CLI arguments, towers from ``--checkpoint-dir`` or random (seed ``--seed``)."""
    model = ACFPN(
        args.fusion,
        args.config,
        seed=args.seed,
        audio_mode="paper" if args.paper else "frozen",
        neck_channels=args.neck_channels,
        head_channels=args.head_channels,
    )
    if args.checkpoint_dir:
        model.load_audioclip(args.checkpoint_dir)
    return model


def _loader(
    ds: Dataset, batch: int, shuffle: bool, args, device, epoch_seed: int | None = None
) -> DataLoader:
    g = None
    if shuffle:
        g = torch.Generator()
        g.manual_seed(int(epoch_seed if epoch_seed is not None else args.seed))
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=shuffle,
        generator=g,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _resume(path: str, model: ACFPN, optimizer, scaler, args) -> dict:
    info = read_acfpn_checkpoint(path)
    if info["kind"] != "acfpn" or "optimizer" not in info["payload"]:
        raise CheckpointError(f"{path}: not a training checkpoint of this script (last.pt)")
    pay = info["payload"]
    if canonical_fusion(info["fusion"]) != model.fusion:
        raise CheckpointError(
            f"{path} was trained with fusion {info['fusion']!r}, not {model.fusion!r}"
        )
    if info["config"] != model.config_name:
        raise CheckpointError(
            f"{path} was trained with config {info['config']!r}, not {model.config_name!r}"
        )
    if info["audio_mode"] != model.audio_mode:
        raise CheckpointError(
            f"{path} was trained with audio mode {info['audio_mode']!r}; pass --paper accordingly"
        )
    want = info["towers"].get("audio", {})
    have = model.tower_provenance["audio"]
    if want.get("sha256") != have.get("sha256") or want.get("seed") != have.get("seed"):
        raise CheckpointError(f"{path}: its audio tower was {want}, this run's is {have}")
    model.load_trained_state_dict(info["state_dict"], source=path)
    model.tower_provenance["visual"] = dict(info["towers"].get("visual", {}))
    optimizer.load_state_dict(pay["optimizer"])
    if scaler is not None and pay.get("scaler"):
        scaler.load_state_dict(pay["scaler"])
    return pay


def _json_safe(d: Mapping[str, Any]) -> dict:
    return {
        k: (v if isinstance(v, int | float | str | bool | type(None)) else str(v))
        for k, v in d.items()
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run training from CLI arguments; returns a summary dict (also written to ``--out``)."""
    args = parse_args(argv)
    device = _device(args.device)
    amp_dtype, use_scaler = _amp(args.amp, device)
    seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress

    common = dataset_options(args)
    train_ds = AVSBenchVideos(args.data_root, args.split_kind, "train", **common)
    val_ds = AVSBenchVideos(args.data_root, args.split_kind, "val", **common)

    model = build_model(args).to(device)
    optimizer = make_optimizer(model, args.lr, args.backbone_lr_mult)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    cache = None if (args.paper or args.no_audio_cache) else AudioCache()

    start, best, best_epoch, history = 0, -1.0, -1, []
    if args.resume:
        pay = _resume(args.resume, model, optimizer, scaler, args)
        start = int(pay["epoch"]) + 1
        best, best_epoch = float(pay.get("best_miou", -1.0)), int(pay.get("best_epoch", -1))
        history = list(pay.get("history", []))
    run_info = {
        "args": _json_safe(vars(args)),
        "device": str(device),
        "amp": str(amp_dtype) if amp_dtype else "off",
        "towers": model.tower_provenance,
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2))
    print(
        f"AC-FPN {model.fusion} ({FUSIONS[model.fusion]}), {args.config}, audio {model.audio_mode}, "
        f"{len(train_ds)} train / {len(val_ds)} val videos, epochs {start}..{args.epochs - 1}, "
        f"device {device}, amp {run_info['amp']}",
        flush=True,
    )

    val_loader = _loader(val_ds, 1, False, args, device)
    for epoch in range(start, args.epochs):
        model.train()
        t0 = time.time()
        losses = []
        loader = _loader(
            train_ds, args.batch_size, True, args, device, epoch_seed=args.seed + epoch
        )
        bar = _bar(loader, progress, f"epoch {epoch}")
        for batch in bar:
            loss = train_step(
                model,
                batch,
                optimizer,
                paper=args.paper,
                device=device,
                scaler=scaler,
                amp_dtype=amp_dtype,
                cache=cache,
            )
            if not math.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: the loss is {loss}")
            losses.append(loss)
            if progress:
                bar.set_postfix(loss=f"{loss:.4f}")
        val = evaluate(
            model,
            val_loader,
            device=device,
            amp_dtype=amp_dtype,
            cache=cache,
            progress=progress,
            desc=f"val {epoch}",
        )
        rec = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "val_miou": val["miou"],
            "seconds": round(time.time() - t0, 2),
        }
        improved = val["miou"] > best
        if improved:
            best, best_epoch = val["miou"], epoch
            save_acfpn(
                model, out / "best.pt", extra={"epoch": epoch, "val_miou": best, "seed": args.seed}
            )
        rec["best_miou"] = best
        history.append(rec)
        save_acfpn(
            model,
            out / "last.pt",
            extra={
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "best_miou": best,
                "best_epoch": best_epoch,
                "history": history,
                "seed": args.seed,
            },
        )
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(
            f"epoch {epoch}: loss {rec['loss']:.4f}, val mIoU {val['miou']:.4f} "
            f"(best {best:.4f} @ {best_epoch}){' *' if improved else ''}, {rec['seconds']} s",
            flush=True,
        )

    summary: dict[str, Any] = {
        "best_val_miou": best,
        "best_epoch": best_epoch,
        "epochs": args.epochs,
        "history": history,
        "out": str(out),
    }
    if not args.skip_test and (out / "best.pt").is_file():
        info = read_acfpn_checkpoint(out / "best.pt")
        model.load_trained_state_dict(info["state_dict"], source=str(out / "best.pt"))
        test_ds = AVSBenchVideos(args.data_root, args.split_kind, "test", **common)
        test = evaluate(
            model,
            _loader(test_ds, 1, False, args, device),
            device=device,
            fscore=True,
            amp_dtype=amp_dtype,
            cache=cache,
            progress=progress,
            desc="test",
        )
        summary["test"] = test
        (out / "test_metrics.json").write_text(json.dumps(test, indent=2))
        print(
            f"test: mIoU {test['miou']:.4f}, F {test['fscore']:.4f} ({test['videos']} videos)",
            flush=True,
        )
    return summary


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
