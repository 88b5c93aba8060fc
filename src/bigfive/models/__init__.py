"""The two-stream cross-attention network: streams, attention, fusion variants, checkpoints."""

from bigfive.models.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from bigfive.models.network import TwoStreamNet, build_model, count_parameters

__all__ = ["CheckpointError", "TwoStreamNet", "build_model", "count_parameters", "checkpoint_state", "save_checkpoint",
           "load_checkpoint", "model_from_checkpoint"]
