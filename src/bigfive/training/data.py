"""Memory-mapped feature arrays, the shared two-stream augmentation, and seeded loaders.

The arrays are opened with ``np.load(mmap_mode="r")``: only the rows a batch touches are read, so
a dataset larger than RAM trains the same way as the sample. Augmentation decisions are drawn from
``np.random.default_rng((seed, epoch, index))`` per clip, so they do not depend on worker count,
batch order or rank, and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bigfive import ALL_LABELS

STATIC_FILE = "static_features.npy"
DYNAMIC_FILE = "dynamic_features.npy"
LABELS_FILE = "labels.npy"
IDS_FILE = "clip_ids.txt"


class FeaturesError(ValueError):
    """Feature arrays that cannot be trained on; the message names the file and the problem."""


@dataclass
class FeatureArrays:
    """One split's arrays (memory maps) and clip ids; rows are clips."""

    static: np.ndarray  # (N, T, 3, S, S) uint8
    dynamic: np.ndarray  # (N, T, C, S, S) uint8
    labels: np.ndarray  # (N, >=outputs) float32 in ALL_LABELS order
    clip_ids: list[str]
    source: str  # where they came from, for messages

    def __len__(self) -> int:
        return int(self.static.shape[0])

    @property
    def frames(self) -> int:
        return int(self.static.shape[1])

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started by spawn/forkserver get the file names, not a pickled copy of the data
        state = dict(self.__dict__)
        for key in ("static", "dynamic", "labels"):
            arr = state[key]
            if isinstance(arr, np.memmap) and getattr(arr, "filename", None):
                state[key] = ("__memmap__", str(arr.filename))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("static", "dynamic", "labels"):
            value = state[key]
            if isinstance(value, tuple) and value[:1] == ("__memmap__",):
                state[key] = np.load(value[1], mmap_mode="r", allow_pickle=False)
        self.__dict__.update(state)

    @property
    def flow_channels(self) -> int:
        return int(self.dynamic.shape[2])

    @property
    def crop_size(self) -> int:
        return int(self.static.shape[-1])


def _open(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FeaturesError(f"{path}: not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise FeaturesError(f"{path}: not a readable .npy array ({err})") from None


def load_arrays(static_path: str | Path, dynamic_path: str | Path, labels_path: str | Path,
                ids_path: str | Path | None = None) -> FeatureArrays:
    """Open and check the three arrays (and optional clip ids); errors name the offending file."""
    static_path, dynamic_path, labels_path = Path(static_path), Path(dynamic_path), Path(labels_path)
    static, dynamic, labels = _open(static_path), _open(dynamic_path), _open(labels_path)
    for path, arr, name in ((static_path, static, "static"), (dynamic_path, dynamic, "dynamic")):
        if arr.ndim != 5:
            raise FeaturesError(f"{path}: {name} features must be 5-D (N, T, C, S, S), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise FeaturesError(f"{path}: {name} features must be uint8, got {arr.dtype}")
    if static.shape[2] != 3:
        raise FeaturesError(f"{static_path}: static features need 3 (RGB) channels, got shape {static.shape}")
    if dynamic.shape[2] < 2 or dynamic.shape[2] % 2:
        raise FeaturesError(f"{dynamic_path}: flow channels must be dx, dy pairs, got shape {dynamic.shape}")
    if dynamic.shape[:2] != static.shape[:2] or dynamic.shape[3:] != static.shape[3:]:
        raise FeaturesError(f"{dynamic_path}: shape {dynamic.shape} does not match {static_path} {static.shape} "
                            "in N, T or S")
    if labels.ndim != 2 or labels.shape[0] != static.shape[0]:
        raise FeaturesError(f"{labels_path}: labels must be (N={static.shape[0]}, {len(ALL_LABELS)}), "
                            f"got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.floating):
        raise FeaturesError(f"{labels_path}: labels must be floats in [0, 1], got {labels.dtype}")
    clip_ids = [f"{i}" for i in range(static.shape[0])]
    if ids_path is not None and Path(ids_path).is_file():
        clip_ids = Path(ids_path).read_text().split()
        if len(clip_ids) != static.shape[0]:
            raise FeaturesError(f"{ids_path}: {len(clip_ids)} clip ids for {static.shape[0]} rows of {static_path}")
    return FeatureArrays(static, dynamic, labels, clip_ids, str(static_path.parent))


def load_split(features_dir: str | Path, split: str) -> FeatureArrays:
    """``<features_dir>/<split>/{static_features,dynamic_features,labels}.npy`` + ``clip_ids.txt``."""
    d = Path(features_dir) / split
    if not d.is_dir():
        raise FeaturesError(f"{d}: split directory not found (run the features stage: dvc repro features)")
    return load_arrays(d / STATIC_FILE, d / DYNAMIC_FILE, d / LABELS_FILE, d / IDS_FILE)


def read_meta(features_dir: str | Path) -> dict[str, Any] | None:
    path = Path(features_dir) / "meta.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FeaturesError(f"{path}: not valid JSON ({err})") from None


def check_labels(arrays: FeatureArrays, outputs: int) -> None:
    """The first ``outputs`` label columns must exist and be finite in [0, 1] (checked once, not per batch)."""
    if arrays.labels.shape[1] < outputs:
        raise FeaturesError(f"{arrays.source}/{LABELS_FILE}: model.outputs={outputs} needs {outputs} label "
                            f"columns, got {arrays.labels.shape[1]} (data.predict_interview adds column 5)")
    y = np.asarray(arrays.labels[:, :outputs])
    bad = ~np.isfinite(y) | (y < 0) | (y > 1)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise FeaturesError(f"{arrays.source}/{LABELS_FILE}: {int(bad.sum())} label values outside [0, 1], "
                            f"first at clip {arrays.clip_ids[row]!r} ({ALL_LABELS[col]}={y[row, col]})")


def hflip(static: np.ndarray, dynamic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror both streams along W; flow dx (even channels) is negated, which is q -> 255 - q for uint8."""
    static = static[..., ::-1]
    dynamic = dynamic[..., ::-1].copy()
    dynamic[:, 0::2] = 255 - dynamic[:, 0::2]
    return np.ascontiguousarray(static), dynamic


def augment(static: np.ndarray, dynamic: np.ndarray, rng: np.random.Generator, p_flip: float,
            p_shuffle: float) -> tuple[np.ndarray, np.ndarray]:
    """One clip (T, C, S, S) per stream: optional flip, optional shared temporal permutation."""
    # draw both decisions always, so one setting does not shift the other's random stream
    flip, shuffle = rng.random() < p_flip, rng.random() < p_shuffle
    perm = rng.permutation(static.shape[0])
    if flip:
        static, dynamic = hflip(static, dynamic)
    if shuffle:
        static, dynamic = static[perm], dynamic[perm]
    return static, dynamic


class ClipDataset(Dataset):
    """Rows ``indices`` of ``arrays``; ``(static, dynamic, labels, index)`` per item, uint8 stays uint8."""

    def __init__(self, arrays: FeatureArrays, indices: Sequence[int] | None = None, outputs: int = 5,
                 p_flip: float = 0.0, p_shuffle: float = 0.0, seed: int = 0):
        self.arrays = arrays
        self.indices = np.arange(len(arrays)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.outputs = outputs
        self.p_flip, self.p_shuffle, self.seed = p_flip, p_shuffle, seed
        self.epoch = 0  # set before each epoch; workers are re-created per epoch and see it

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = int(self.indices[i])
        static = np.array(self.arrays.static[row])  # a copy: the memmap itself is read-only
        dynamic = np.array(self.arrays.dynamic[row])
        if self.p_flip > 0 or self.p_shuffle > 0:
            rng = np.random.default_rng((self.seed, self.epoch, row))
            static, dynamic = augment(static, dynamic, rng, self.p_flip, self.p_shuffle)
        labels = np.array(self.arrays.labels[row, :self.outputs], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(static)), torch.from_numpy(dynamic), \
            torch.from_numpy(labels), row


class EpochSampler(Sampler[int]):
    """Shuffled (seed + epoch) or ordered positions, sharded ``rank::world`` without padding.

    Unlike DistributedSampler it never repeats clips to even out ranks, so all-reduced sums over
    ranks equal the single-process sums exactly (validation metrics are the same for any world size).
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return iter(order[self.rank::self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def make_loader(dataset: ClipDataset, sampler: Sampler, batch_size: int, num_workers: int,
                pin_memory: bool = False) -> DataLoader:
    # a fixed generator keeps DataLoader's worker seeding off the global RNG, which dropout uses
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False, generator=torch.Generator().manual_seed(0),
                      persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None)


def split_indices(n: int, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random (train, val) split of ``range(n)``; val gets ``ceil(n * val_share)`` rows (>= 1)."""
    if not 0.0 < val_share < 1.0:
        raise ValueError(f"--val-split must be in (0, 1), got {val_share}")
    n_val = max(1, math.ceil(n * val_share))
    if n_val >= n:
        raise FeaturesError(f"{n} clips are too few for a validation share of {val_share}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass
class TrainData:
    """What ``fit`` trains and validates on, with the preprocessing record that goes into checkpoints."""

    train: FeatureArrays
    val: FeatureArrays
    train_indices: np.ndarray
    val_indices: np.ndarray
    meta: dict[str, Any]  # features meta.json (checkpoint "preprocess")
    features_dir: Path | None  # for the DVC hash tag
    files: list[Path]  # for the fingerprint when DVC has no hash

    @property
    def n_train(self) -> int:
        return len(self.train_indices)

    @property
    def n_val(self) -> int:
        return len(self.val_indices)


def _meta_or_fallback(meta: dict[str, Any] | None, arrays: FeatureArrays, fallback: dict[str, Any],
                      where: str) -> dict[str, Any]:
    if meta is None:
        # predict must repeat the preprocessing; without meta.json the configured one is the best record
        meta = {**fallback, "frames": arrays.frames, "crop_size": arrays.crop_size,
                "channels": arrays.flow_channels, "labels": list(ALL_LABELS), "source": "params.preprocess"}
    for key, actual in (("frames", arrays.frames), ("crop_size", arrays.crop_size)):
        if key in meta and meta[key] != actual:
            raise FeaturesError(f"{where}: meta.json says {key}={meta[key]} but the arrays have {actual}")
    return meta


def from_features_dir(features_dir: str | Path, fallback_meta: dict[str, Any]) -> TrainData:
    """The train and val splits of a features stage output (``preprocess.features_dir``)."""
    features_dir = Path(features_dir)
    train, val = load_split(features_dir, "train"), load_split(features_dir, "val")
    for name, arrays in (("train", train), ("val", val)):
        if len(arrays) == 0:
            raise FeaturesError(f"{features_dir / name}: no clips (training needs train and val clips)")
    if (val.frames, val.flow_channels, val.crop_size) != (train.frames, train.flow_channels, train.crop_size):
        raise FeaturesError(f"{features_dir}/val: clip shape differs from train "
                            f"({val.static.shape[1:]} vs {train.static.shape[1:]})")
    meta = _meta_or_fallback(read_meta(features_dir), train, fallback_meta, str(features_dir / "meta.json"))
    files = [features_dir / "meta.json"] if (features_dir / "meta.json").is_file() else []
    for split in ("train", "val"):
        files += [features_dir / split / f for f in (STATIC_FILE, DYNAMIC_FILE, LABELS_FILE)]
    return TrainData(train, val, np.arange(len(train)), np.arange(len(val)), meta, features_dir, files)


def from_files(static: str | Path, dynamic: str | Path, labels: str | Path, val_split: float, seed: int,
               fallback_meta: dict[str, Any]) -> TrainData:
    """Direct entry: three arrays, split into train/val at random (seeded); meta.json read if beside them."""
    static, dynamic, labels = Path(static), Path(dynamic), Path(labels)
    ids = static.parent / IDS_FILE
    arrays = load_arrays(static, dynamic, labels, ids if ids.is_file() else None)
    train_idx, val_idx = split_indices(len(arrays), val_split, seed)
    meta = None
    for d in (static.parent, static.parent.parent):
        meta = read_meta(d)
        if meta is not None:
            break
    meta = _meta_or_fallback(meta, arrays, fallback_meta, str(static))
    return TrainData(arrays, arrays, train_idx, val_idx, meta, None, [static, dynamic, labels])
