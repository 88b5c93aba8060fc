"""``bigfive compare``: summarise ablation runs into tables, a figure and significance tests that count seeds;
``bigfive compare --calibrate``: measure those tests' false-positive rate (docs/statistics.md).

Reads ``<runs_dir>/<variant>/seed<seed>/`` (written by ``bigfive ablate``, :mod:`bigfive.ablation.runs`) and writes,
under the results folder (``ablation.results_dir``, or ``ablation.flow.results_dir`` with ``--flow``):

- ``summary.csv``: one row per variant (``variant`` column): mean and sd over seeds of every accuracy, PCC and CCC,
  each accuracy's own 95% CI, validation (``val_mean_accuracy_mean|std``, ``val_win_share``), the interaction epochs,
  Δ vs the reference with its CI (``delta_<trait>_accuracy``, ``delta_<trait>_ci95_low|high``), the p-values
  (``p_value``, ``p_value_<trait>``), their Benjamini-Hochberg q-values (``..._q``: the exploratory family) and
  ``p_floor`` (the test's smallest attainable p: 2 / labelings for the permutation; 0 for the t test). A duplicate
  variant repeats its twin's numbers.
- ``primaries.csv``: the primary comparisons declared in ``ablation.primaries``, with Holm over them only.
- ``summary.md``: the primaries, then the exploratory tables; ``summary.png``; ``metrics.json`` (DVC metrics).

Statistics: :mod:`bigfive.ablation.summary` (rows, q-values), :mod:`bigfive.ablation.primaries`,
:mod:`bigfive.ablation.seedtest` (the permutation and t tests), :mod:`bigfive.ablation.stats` (bootstrap, Holm,
BH); tables: :mod:`bigfive.ablation.table`; figure: :mod:`bigfive.ablation.figures`; calibration and power:
:mod:`bigfive.ablation.calibration`, :mod:`bigfive.ablation.power`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from bigfive.ablation import table
from bigfive.ablation.runs import load_runs, traits_of
from bigfive.ablation.summary import summarize

log = logging.getLogger("bigfive.ablation")


def write_outputs(rows: list[dict[str, Any]], traits: list[str], out_dir: str | Path, reference: str, test: str,
                  problems: list[str], resamples: int = 10000, primaries: list[dict[str, Any]] | None = None,
                  alpha: float = 0.05) -> dict[str, Path]:
    from bigfive.ablation.figures import plot_summary
    from bigfive.utils.io import write_json, write_text

    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "summary.csv", "md": out_dir / "summary.md", "png": out_dir / "summary.png",
             "metrics": out_dir / "metrics.json"}
    write_text(paths["csv"], table.summary_csv(rows, traits))
    if primaries is not None:
        paths["primaries"] = out_dir / "primaries.csv"
        write_text(paths["primaries"], table.to_csv(primaries, table.PRIMARY_COLUMNS))
    write_text(paths["md"], table.summary_markdown(rows, traits, reference, test, problems, resamples, primaries,
                                                   alpha))
    write_json(paths["metrics"], table.metrics_json(rows, primaries))
    plot_summary(rows, traits, paths["png"], reference)
    return paths


def compare(runs_dir: str | Path, out_dir: str | Path, *, reference: str, variants: list[str] | None = None,
            seeds: list[int] | None = None, test: str = "permutation", resamples: int = 10000, seed: int = 0,
            alpha: float = 0.05, primaries: dict[str, Any] | None = None,
            clip_term: bool = False) -> list[dict[str, Any]]:
    """Load, summarise and write everything; returns the summary rows. ``primaries``: ablation.primaries."""
    runs = load_runs(runs_dir, variants, seeds)
    if not runs.runs:
        raise FileNotFoundError(f"{runs_dir}: no usable ablation runs ({len(runs.problems)} left out: "
                                f"{'; '.join(runs.problems[:3])})")
    rows = summarize(runs, reference, variants, test=test, resamples=resamples, seed=seed, alpha=alpha,
                     clip_term=clip_term)
    prim = None
    if primaries:
        from bigfive.ablation.primaries import evaluate

        prim = evaluate(runs, primaries, alpha, clip_term, test)
    traits = traits_of(runs)
    paths = write_outputs(rows, traits, out_dir, reference, test, runs.problems, resamples, prim, alpha)
    log.info("compared %d variants (%d runs, %d left out): %s", len(rows), sum(len(v) for v in runs.runs.values()),
             len(runs.problems), ", ".join(str(p) for p in paths.values()))
    for r in rows:
        log.info("%-45s mean accuracy %s  Δ %s  p %s (q %s)", r["variant"], table.pm(r["mean_accuracy_mean"],
                 r["mean_accuracy_std"]), table.cell(r["delta_mean_accuracy"]), table.fmt_p(r["p_value"]),
                 table.fmt_p(r["p_value_q"]))
    for p in prim or []:
        log.info("primary %s: Δ %s, p (Holm) %s: %s", p["primary"], table.cell(p["delta"]),
                 table.fmt_p(p["p_value_holm"]), p["decision"])
    return rows


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", action="store_true",
                        help="compare the preprocessing ablation (ablation.flow) instead of the model ablation")
    parser.add_argument("--runs-dir", type=Path,
                        help="default: <results_dir>/runs (with --calibrate: ablation.calibration.runs_dir)")
    parser.add_argument("--results-dir", type=Path, help="output folder (default: ablation.results_dir)")
    parser.add_argument("--reference", help="variant every other one is tested against (default: ablation.reference)")
    parser.add_argument("--all-found", action="store_true",
                        help="every run folder found, not only the configured variants x seeds")
    parser.add_argument("--from-mlflow", action="store_true",
                        help="first rebuild the run folders from the MLflow store's complete runs (as "
                             "`bigfive ablate --collect`): compare on a machine that trained nothing")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure the tests' false-positive rate on A/A splits of the reference's calibration "
                             "seeds (ablation.calibration) -> calibration.json, calibration.png, power.md")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params

    params = load_params(args.params)
    cfg = params.ablation
    if args.calibrate:
        from bigfive.ablation.calibration import run_calibration

        run_calibration(params, runs_dir=args.runs_dir, out_dir=args.results_dir)
        return 0
    if args.flow:
        results, reference = Path(cfg.flow.results_dir), cfg.flow.reference
        variants, seeds, primaries = cfg.flow.names, list(cfg.flow.seeds), None
    else:
        results, reference = Path(cfg.results_dir), cfg.reference
        variants, seeds, primaries = list(cfg.variants), list(cfg.seeds), cfg.primaries
    if args.all_found:
        variants, seeds = None, None
    out = args.results_dir or results
    runs_dir = args.runs_dir or results / "runs"
    if args.from_mlflow and not args.flow:
        from bigfive.ablation.collect import collect

        missing = collect(params, runs_dir)
        if missing:
            log.warning("%d run(s) not complete in MLflow, left out: %s", len(missing), ", ".join(missing[:10]))
    compare(runs_dir, out, reference=args.reference or reference, variants=variants,
            seeds=seeds, test=cfg.test, resamples=cfg.bootstrap, seed=params.seed, alpha=cfg.alpha,
            primaries=primaries, clip_term=cfg.clip_term)
    return 0
