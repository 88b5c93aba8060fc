"""Ablation variants: a name -> dotted-key overrides of ``params.yaml`` (``model.*``, ``train.*``).

Every variant states the fusion settings it tests in full, so its meaning does not drift when
the base ``model`` section changes (a tuned default of 8 heads must not silently turn the
"4 heads" variant into something else). Two variants that resolve to the same model and training
settings are trained once: :func:`canonical` names the first of them, and the later one is an
alias in the results (``cross_attention_bidirectional_h4`` is the reference model while the
default is 4 heads).
"""

from __future__ import annotations

from typing import Any

from bigfive.config import ConfigError, Params, replace, to_dict
from bigfive.config.ablation import (
    ALLOWED_SECTIONS,
    DEFAULT_REFERENCE,
    DEFAULT_VARIANTS,
    REQUIRED_VARIANTS,
    check_name,
    check_overrides,
)


def run_params(base: Params, overrides: dict[str, Any], *, seed: int, epochs: int) -> Params:
    """``base`` with a variant's overrides, ``seed`` (model init, shuffling, augmentation) and the ablation's
    epoch budget applied; validated (a variant asking for 3 heads of a 64-wide model fails here)."""
    train = base.train
    warmup = min(train.warmup_epochs, max(0, epochs - 1))
    merged = {"train.epochs": epochs, "train.warmup_epochs": warmup, **overrides, "seed": seed, "train.seed": seed}
    if "train.epochs" in overrides and "train.warmup_epochs" not in overrides:
        merged["train.warmup_epochs"] = min(train.warmup_epochs, max(0, int(overrides["train.epochs"]) - 1))
    return replace(base, merged)


def resolved(base: Params, overrides: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The model and train sections a variant trains with (seed left out): its identity."""
    p = run_params(base, overrides, seed=0, epochs=epochs)
    return {"model": to_dict(p.model), "train": to_dict(p.train)}


def canonical(base: Params, variants: dict[str, dict[str, Any]], name: str, epochs: int) -> str:
    """The first variant (in declaration order) that trains exactly what ``name`` trains."""
    if name not in variants:
        raise ConfigError("ablation.variants", f"no variant named {name!r} (known: {', '.join(variants)})")
    mine = resolved(base, variants[name], epochs)
    for other, overrides in variants.items():
        if other == name:
            return name
        if resolved(base, overrides, epochs) == mine:
            return other
    return name  # pragma: no cover - the loop always reaches ``name``


def aliases(base: Params, variants: dict[str, dict[str, Any]], epochs: int) -> dict[str, str]:
    """variant -> the earlier variant it duplicates (only duplicates are listed)."""
    out = {}
    for name in variants:
        first = canonical(base, variants, name, epochs)
        if first != name:
            out[name] = first
    return out


__all__ = ["DEFAULT_VARIANTS", "REQUIRED_VARIANTS", "DEFAULT_REFERENCE", "ALLOWED_SECTIONS", "check_name",
           "check_overrides", "run_params", "resolved", "canonical", "aliases"]
