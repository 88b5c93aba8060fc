"""``ablation`` section: variants x seeds trained and compared by pipelines/ablation, and the
preprocessing comparison (flow method x T) of pipelines/ablation_flow."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bigfive.config.base import ConfigError, check, positive

_S2D = {"model.direction": "static_to_dynamic"}
_XATTN = {"model.fusion": "cross_attention", **_S2D, "model.time_bias": True, "model.heads": 4}

# The variants of the issue, in the order tables and figures show them: single streams; (a) pool
# over time, then fuse; (b) fuse per time step with fixed weights, aligned or not; (c) learned
# attention without the same-time prior, then the default model, its other directions and head counts.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "static_only": {"model.fusion": "static_only"},
    "dynamic_only": {"model.fusion": "dynamic_only"},
    "concat": {"model.fusion": "concat"},
    "late": {"model.fusion": "late"},
    "framewise_shifted": {"model.fusion": "framewise_shifted", **_S2D},
    "framewise": {"model.fusion": "framewise", **_S2D},
    "cross_attention_no_time_bias": {**_XATTN, "model.time_bias": False},
    "cross_attention_static_to_dynamic": dict(_XATTN),
    "cross_attention_dynamic_to_static": {**_XATTN, "model.direction": "dynamic_to_static"},
    "cross_attention_bidirectional": {**_XATTN, "model.direction": "bidirectional"},
    "cross_attention_h1": {**_XATTN, "model.heads": 1},
    "cross_attention_h8": {**_XATTN, "model.heads": 8},
}
REQUIRED_VARIANTS: tuple[str, ...] = tuple(DEFAULT_VARIANTS)
DEFAULT_REFERENCE = "cross_attention_static_to_dynamic"  # the default model

# Sections a variant may change; data, preprocessing and tracking belong to the pipeline, not the variant.
ALLOWED_SECTIONS = ("model", "train")
# a safe directory name, DVC stage key and params key (a dot would split the key path)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_name(name: str, key: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(key, f"{name!r} is not a valid variant name (letters, digits, '_' and '-'; "
                               "it becomes a directory name and a DVC stage name)")


def check_overrides(name: str, overrides: dict[str, Any], key: str) -> None:
    for dotted in overrides:
        section = dotted.split(".", 1)[0]
        if section not in ALLOWED_SECTIONS or "." not in dotted:
            raise ConfigError(f"{key}.{dotted}", f"variant {name!r} may only override model.* or train.* keys")


def preprocess_name(frames: int, method: str) -> str:
    """The name of one preprocessing variant of pipelines/ablation_flow (its data and results folder)."""
    return f"t{frames}_{method}"


@dataclass(frozen=True)
class FlowAblationConfig:
    """pipelines/ablation_flow: the dynamic stream's preprocessing, flow method x T, end to end."""

    methods: list[Literal["dis", "farneback", "tvl1"]] = field(default_factory=lambda: ["dis", "farneback"])
    frames: list[int] = field(default_factory=lambda: [4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    variant: str = DEFAULT_REFERENCE  # the model trained on every preprocessing variant
    reference: str = "t8_dis"  # the main pipeline's settings; every other variant is tested against it
    epochs: int | None = None  # None: ablation.epochs
    data_dir: str = "data/ablation_flow"
    results_dir: str = "results/ablation_flow"
    experiment: str = "bigfive-ablation-flow"

    @property
    def names(self) -> list[str]:
        return [preprocess_name(t, m) for t in self.frames for m in self.methods]

    def validate(self, path: str) -> None:
        check(len(self.methods) > 0, f"{path}.methods", "needs at least one flow method")
        check(len(set(self.methods)) == len(self.methods), f"{path}.methods", f"lists a method twice: {self.methods}")
        check(len(self.frames) > 0, f"{path}.frames", "needs at least one T")
        check(len(set(self.frames)) == len(self.frames), f"{path}.frames", f"lists a T twice: {self.frames}")
        for i, t in enumerate(self.frames):
            check(t >= 2, f"{path}.frames[{i}]", f"must be >= 2, got {t}")
        _check_seeds(self.seeds, f"{path}.seeds")
        if self.epochs is not None:
            positive(self.epochs, f"{path}.epochs")
        check(self.reference in self.names, f"{path}.reference",
              f"{self.reference!r} is not one of {', '.join(self.names)} (t<frames>_<method>)")
        check(bool(self.experiment), f"{path}.experiment", "must not be empty")


# Declared before the run (docs/statistics.md): Holm over these only; every other cell of the table is exploratory.
DEFAULT_PRIMARIES: dict[str, dict[str, Any]] = {
    # with sample.cross_time, "attention_reads_cross_time" (DEFAULT_REFERENCE vs framewise on conscientiousness,
    # superiority) joins them: the default sample has no cross-time trait, so it is not declared (params.yaml)
    "attention_equals_framewise_same_time": {"variant": DEFAULT_REFERENCE, "versus": "framewise",
                                             "trait": "agreeableness", "kind": "equivalence", "margin": 0.01},
    "alignment_reads_same_time": {"variant": "framewise", "versus": "concat", "trait": "agreeableness",
                                  "kind": "superiority", "margin": 0.0},
}


@dataclass(frozen=True)
class PrimaryConfig:
    """One primary hypothesis: ``variant`` vs ``versus`` on ``trait`` (a trait or ``mean``), declared in advance.

    superiority: H1 variant - versus > margin (one-sided); equivalence: |variant - versus| < margin (two one-sided
    tests); two_sided: variant != versus.
    """

    variant: str = DEFAULT_REFERENCE
    versus: str = "framewise"
    trait: str = "mean"
    kind: Literal["superiority", "equivalence", "two_sided"] = "superiority"
    margin: float = 0.0

    def validate(self, path: str) -> None:
        check(self.variant != self.versus, f"{path}.versus", f"compares {self.variant!r} with itself")
        check(bool(self.trait), f"{path}.trait", "must name a trait or 'mean'")
        check(self.margin >= 0, f"{path}.margin", f"must be >= 0, got {self.margin}")
        check(self.kind != "equivalence" or self.margin > 0, f"{path}.margin", "an equivalence test needs a margin > 0")


def _primaries() -> dict[str, PrimaryConfig]:
    return {name: PrimaryConfig(**spec) for name, spec in DEFAULT_PRIMARIES.items()}


@dataclass(frozen=True)
class CalibrationConfig:
    """``bigfive compare --calibrate``: A/A null datasets from the reference model trained with fresh seeds."""

    seeds: list[int] = field(default_factory=lambda: list(range(100, 110)))  # 2 x the ablation's seed count at least
    datasets: int = 2000  # null datasets (seed split x clip resample)
    bootstrap: int = 999  # resamples of the hierarchical candidate per null dataset
    runs_dir: str = "results/ablation/calibration_runs"  # <runs_dir>/<reference>/seed<N> (`bigfive ablate --out`)
    # the power table's cost side: wall seconds per run at `bigfive ablate --all --jobs 2` on 2 cores (the last real
    # run: 60 runs in 54 min 55 s) and the ablation's budget; seed counts above the budget are marked
    run_seconds: float = 55.0
    budget_minutes: float = 60.0

    def validate(self, path: str) -> None:
        _check_seeds(self.seeds, f"{path}.seeds")
        positive(self.datasets, f"{path}.datasets")
        positive(self.bootstrap, f"{path}.bootstrap")
        positive(self.run_seconds, f"{path}.run_seconds")
        positive(self.budget_minutes, f"{path}.budget_minutes")


@dataclass(frozen=True)
class AblationConfig:
    # 5 seeds: the hierarchical test resamples them, and with 3 a single seed that misses the interaction trait
    # is a third of the evidence (docs/ablation.md, "The comparison and the tests")
    seeds: list[int] = field(default_factory=lambda: [200, 201, 202, 203, 204])
    epochs: int = 16
    experiment: str = "bigfive-ablation"
    results_dir: str = "results/ablation"
    reference: str = DEFAULT_REFERENCE  # the full model every variant is tested against
    # variant name -> overrides of the model section (and optionally train.*), as dotted keys.
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_VARIANTS))
    # seeds on which a recipe choice was made (interaction and recipe sweeps, tune): an ablation on them carries a
    # winner's-curse bias for the chosen recipe, so ``seeds`` may not share one unless reuse_selection_seeds
    selection_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    reuse_selection_seeds: bool = False
    # test of each variant against the reference (bigfive.ablation.seedtest, calibrated in docs/statistics.md):
    # "permutation" relabels whole seeds, CI by inverting it (the one calibrated on every column); "seed_t" is a
    # Welch t over seeds, CI by inverting it (conservative where seeds miss the interaction); "hierarchical"
    # bootstraps seeds and clips (liberal with 5 seeds); "wilcoxon" is clip-paired, conditional on the trained seeds
    test: Literal["permutation", "seed_t", "hierarchical", "wilcoxon"] = "permutation"
    # seed_t's clip-paired variance term: on A/A nulls of the real runs it made the test conservative (1.5-2 % false
    # positives at alpha 0.05 where the t without it had 3.9-5.1 %, docs/statistics.md); without it the inference is
    # about these test clips, with seeds as the replication unit
    clip_term: bool = False
    alpha: float = 0.05  # level of the CIs (1 - alpha) and of the decisions
    primaries: dict[str, PrimaryConfig] = field(default_factory=_primaries)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    # resamples of the hierarchical bootstrap (the CIs always, the test when hierarchical). A bootstrap p-value is at
    # least 1 / (B + 1), so Holm over m p-values cannot go below m / (B + 1): 6 per tested variant, m = 84 for 14
    # of them, and B = 2000 would floor every adjusted p-value at 0.042
    bootstrap: int = 10000
    flow: FlowAblationConfig = field(default_factory=FlowAblationConfig)

    def validate(self, path: str) -> None:
        _check_seeds(self.seeds, f"{path}.seeds")
        positive(self.epochs, f"{path}.epochs")
        positive(self.bootstrap, f"{path}.bootstrap")
        check(bool(self.experiment), f"{path}.experiment", "must not be empty")
        check(len(self.variants) > 0, f"{path}.variants", "needs at least one variant")
        for name, overrides in self.variants.items():
            check_name(name, f"{path}.variants.{name}")
            check_overrides(name, overrides, f"{path}.variants.{name}")
        check(self.reference in self.variants, f"{path}.reference",
              f"{self.reference!r} is not one of the variants ({', '.join(self.variants)})")
        check(self.flow.variant in self.variants, f"{path}.flow.variant",
              f"{self.flow.variant!r} is not one of the variants ({', '.join(self.variants)})")
        check(0 < self.alpha < 0.5, f"{path}.alpha", f"must be in (0, 0.5), got {self.alpha}")
        for name, primary in self.primaries.items():
            # names only: a cut-down ablation (a subset of variants) keeps the declared primaries, and compare
            # reports a primary whose variants were not run as "not run"
            check_name(primary.variant, f"{path}.primaries.{name}.variant")
            check_name(primary.versus, f"{path}.primaries.{name}.versus")
        reused = sorted(set(self.seeds) & set(self.selection_seeds))
        check(not reused or self.reuse_selection_seeds, f"{path}.seeds",
              f"seeds {reused} are selection seeds (ablation.selection_seeds): a recipe was chosen on them; use "
              "fresh seeds or set ablation.reuse_selection_seeds: true")


def _check_seeds(seeds: list[int], key: str) -> None:
    check(len(seeds) > 0, key, "needs at least one seed")
    check(len(set(seeds)) == len(seeds), key, f"lists a seed twice: {seeds}")
    for i, s in enumerate(seeds):
        check(s >= 0, f"{key}[{i}]", f"must be >= 0, got {s}")
