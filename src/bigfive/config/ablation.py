"""``ablation`` section: variants x seeds trained and compared by pipelines/ablation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bigfive.config.base import check, positive


@dataclass(frozen=True)
class AblationConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 25
    experiment: str = "bigfive-ablation"
    results_dir: str = "results/ablation"
    reference: str = "cross_attention_bidirectional"  # the full model every variant is tested against
    # variant name -> overrides of the model section (and optionally train.*), as dotted keys.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        check(len(self.seeds) > 0, f"{path}.seeds", "needs at least one seed")
        positive(self.epochs, f"{path}.epochs")
        if self.variants:
            check(self.reference in self.variants, f"{path}.reference",
                  f"{self.reference!r} is not one of the variants")
