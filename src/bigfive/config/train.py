"""``train``, ``tracking`` and ``evaluate`` sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bigfive import ALL_LABELS
from bigfive.config.base import check, fraction, positive


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    patience: int = 15  # early stopping on validation mean accuracy (0 = off)
    num_workers: int = 0  # DataLoader workers
    hflip: float = 0.5  # probability of a horizontal flip (both streams; flow x negated)
    temporal_shuffle: float = 0.0  # probability of one shared random permutation of the T steps
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = True
    compile: bool = False  # torch.compile the model
    models_dir: str = "models"
    # l1 optimises the ChaLearn metric (1 - MAE) directly; mse weights large errors more.
    loss: Literal["l1", "mse"] = "l1"
    min_delta: float = 0.0  # early stopping: smallest val mean accuracy gain that counts as better
    stream_lr_mult: float = 0.3  # learning rate of the two streams, as a multiple of lr (fusion and head: lr)
    freeze_streams_epochs: int = 0  # epochs at the start that train only fusion and head
    # Every run records epochs_to_interaction: the first epoch whose validation accuracy on this
    # trait reaches the threshold (null if never). On the sample, agreeableness is the trait only a
    # per-time-step fusion of both streams can read (docs/sample.md), so this is when fusion starts working.
    interaction_trait: str = "agreeableness"
    interaction_threshold: float = 0.90

    def validate(self, path: str) -> None:
        positive(self.epochs, f"{path}.epochs")
        positive(self.batch_size, f"{path}.batch_size")
        positive(self.lr, f"{path}.lr")
        positive(self.weight_decay, f"{path}.weight_decay", allow_zero=True)
        positive(self.warmup_epochs, f"{path}.warmup_epochs", allow_zero=True)
        check(self.warmup_epochs < self.epochs, f"{path}.warmup_epochs", "must be smaller than train.epochs")
        positive(self.grad_clip, f"{path}.grad_clip", allow_zero=True)
        positive(self.patience, f"{path}.patience", allow_zero=True)
        positive(self.num_workers, f"{path}.num_workers", allow_zero=True)
        fraction(self.hflip, f"{path}.hflip")
        fraction(self.temporal_shuffle, f"{path}.temporal_shuffle")
        positive(self.min_delta, f"{path}.min_delta", allow_zero=True)
        check(self.interaction_trait in ALL_LABELS, f"{path}.interaction_trait",
              f"must be one of {', '.join(ALL_LABELS)}, got {self.interaction_trait!r}")
        positive(self.stream_lr_mult, f"{path}.stream_lr_mult")
        positive(self.freeze_streams_epochs, f"{path}.freeze_streams_epochs", allow_zero=True)
        check(self.freeze_streams_epochs < self.epochs, f"{path}.freeze_streams_epochs",
              "must be smaller than train.epochs")
        fraction(self.interaction_threshold, f"{path}.interaction_threshold")


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "bigfive"
    registered_model: str = "bigfive-xattn"
    champion_alias: str = "champion"
    system_metrics: bool = True
    enabled: bool = True
    system_metrics_interval: float = 2.0  # seconds between CPU/memory/GPU samples

    def validate(self, path: str) -> None:
        check(bool(self.experiment), f"{path}.experiment", "must not be empty")
        positive(self.system_metrics_interval, f"{path}.system_metrics_interval")


@dataclass(frozen=True)
class EvaluateConfig:
    splits: list[Literal["train", "val", "test"]] = field(default_factory=lambda: ["val", "test"])
    results_dir: str = "results"
    example_clips: int = 4  # clips shown in the attention figures
    bootstrap: int = 1000  # resamples for confidence intervals (0 = off)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (bf16 autocast on CUDA)
    batch_size: int = 32  # clips per inference batch (no gradients, so larger than train.batch_size is fine)

    def validate(self, path: str) -> None:
        check(len(self.splits) > 0, f"{path}.splits", "needs at least one split")
        check(len(set(self.splits)) == len(self.splits), f"{path}.splits", f"lists a split twice: {self.splits}")
        positive(self.batch_size, f"{path}.batch_size")
        positive(self.example_clips, f"{path}.example_clips", allow_zero=True)
        positive(self.bootstrap, f"{path}.bootstrap", allow_zero=True)

