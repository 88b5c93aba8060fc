"""``bigfive compare``: summarise ablation runs into a table, a figure and paired significance tests.

Reads ``<runs_dir>/<variant>/seed<seed>/`` (written by ``bigfive ablate``) and writes, under the
results folder (``ablation.results_dir``, or ``ablation.flow.results_dir`` with ``--flow``):

- ``summary.csv``: one row per variant (``variant`` column); mean and sample standard deviation
  over seeds of the mean accuracy (``mean_accuracy_mean``, ``mean_accuracy_std``), of mean PCC and
  CCC, and of each trait's accuracy, PCC and CCC (``agreeableness_accuracy_mean``, ...); the
  difference in mean accuracy to the reference with its paired-bootstrap 95% CI; the paired test's
  p-value on the mean error (``p_value``, Holm-adjusted ``p_value_holm``) and per trait
  (``p_value_<trait>``). A duplicate variant repeats its twin's numbers and names it in ``same_as``.
- ``summary.md``: the same as markdown tables; ``summary.png``: grouped bars with error bars.
- ``metrics.json`` (DVC metrics): per variant, so ``dvc metrics show`` lists every one.

The test (see :mod:`bigfive.ablation.stats`): per test clip, |prediction - label| averaged over
traits and then over seeds; Wilcoxon signed-rank (``ablation.test: wilcoxon``, default) or paired
bootstrap (``bootstrap``) of the differences variant - reference over clips. A run folder that
cannot be read is reported (``summary.md``, log) and left out; it never stops the comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.ablation import stats
from bigfive.ablation.run import METRICS_FILE, PREDICTIONS_FILE

log = logging.getLogger("bigfive.ablation")

KINDS = ("accuracy", "pcc", "ccc")


@dataclass
class SeedRun:
    variant: str
    seed: int
    clip_ids: list[str]
    traits: list[str]
    true: np.ndarray  # (N, K)
    pred: np.ndarray  # (N, K)
    baseline: dict[str, float] = field(default_factory=dict)  # "mean" and per trait, from metrics.json

    @property
    def abs_errors(self) -> np.ndarray:
        return np.abs(self.pred - self.true)


@dataclass
class Runs:
    runs: dict[str, list[SeedRun]]  # variant -> its seeds' runs
    same_as: dict[str, str]  # duplicate variant -> the variant whose runs stand for it
    problems: list[str]  # one line per run folder that could not be used, with the reason


# ---------------------------------------------------------------------------------------------- reading
def read_predictions(path: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``predictions_test.csv`` (video_id, <trait>_true, <trait>_pred, ...) -> ids, traits, true, pred."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0] != "video_id":
            raise ValueError(f"{path}: expected a header starting with video_id")
        traits = [h[: -len("_true")] for h in header[1:] if h.endswith("_true")]
        cols = {h: i for i, h in enumerate(header)}
        missing = [f"{t}_pred" for t in traits if f"{t}_pred" not in cols]
        if not traits or missing:
            raise ValueError(f"{path}: needs <trait>_true and <trait>_pred columns (missing: {missing or 'all'})")
        ids, true, pred = [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                true.append([float(row[cols[f"{t}_true"]]) for t in traits])
                pred.append([float(row[cols[f"{t}_pred"]]) for t in traits])
            except (ValueError, IndexError) as err:
                raise ValueError(f"{path}:{line}: unreadable row ({err})") from None
            ids.append(row[0])
    if not ids:
        raise ValueError(f"{path}: no clips")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: a video_id appears twice")
    t, p = np.asarray(true), np.asarray(pred)
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError(f"{path}: non-finite values")
    return ids, traits, t, p


def _baseline(record: dict[str, Any]) -> dict[str, float]:
    test = record.get("test") if isinstance(record.get("test"), dict) else {}
    out = {}
    if isinstance(test.get("baseline_mean_accuracy"), (int, float)):
        out["mean"] = float(test["baseline_mean_accuracy"])
    for trait, m in (test.get("traits") or {}).items():
        if isinstance(m, dict) and isinstance(m.get("baseline_accuracy"), (int, float)):
            out[trait] = float(m["baseline_accuracy"])
    return out


def load_runs(runs_dir: str | Path, variants: list[str] | None = None, seeds: list[int] | None = None) -> Runs:
    """Every ``<variant>/seed<N>`` folder under ``runs_dir`` (or only ``variants`` x ``seeds``)."""
    runs_dir = Path(runs_dir)
    found = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    names = list(variants) if variants is not None else found
    out = Runs(runs={}, same_as={}, problems=[])
    for name in names:
        vdir = runs_dir / name
        seed_dirs = ([vdir / f"seed{s}" for s in seeds] if seeds is not None
                     else sorted((p for p in vdir.glob("seed*") if p.is_dir()), key=lambda p: p.name))
        for sdir in seed_dirs:
            try:
                run = _load_one(sdir, name)
            except (OSError, ValueError, KeyError, TypeError) as err:
                out.problems.append(f"{sdir}: {err}")
                log.warning("%s: left out of the comparison: %s", sdir, err)
                continue
            if isinstance(run, str):
                out.same_as[name] = run
            else:
                out.runs.setdefault(name, []).append(run)
    return out


def _load_one(sdir: Path, name: str) -> SeedRun | str:
    if not sdir.is_dir():
        raise FileNotFoundError("no such run folder (has `bigfive ablate` run for it?)")
    try:
        seed = int(sdir.name.removeprefix("seed"))
    except ValueError:
        raise ValueError(f"folder name {sdir.name!r} is not seed<N>") from None
    record: dict[str, Any] = {}
    mpath = sdir / METRICS_FILE
    if mpath.is_file():
        try:
            record = json.loads(mpath.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{mpath.name} is not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{mpath.name} does not hold an object")
    if record.get("same_as"):
        return str(record["same_as"])
    ids, traits, true, pred = read_predictions(sdir / PREDICTIONS_FILE)
    return SeedRun(variant=name, seed=seed, clip_ids=ids, traits=traits, true=true, pred=pred,
                   baseline=_baseline(record))


# ------------------------------------------------------------------------------------------- statistics
def seed_metrics(run: SeedRun) -> dict[str, float]:
    """The evaluator's metrics of one run: mean accuracy, mean PCC/CCC over traits, and per trait."""
    from bigfive.evaluation import metrics as M

    acc = np.atleast_1d(M.accuracy(run.pred, run.true))
    pcc = np.atleast_1d(M.pearson(run.pred, run.true))
    cc = np.atleast_1d(M.ccc(run.pred, run.true))
    out = {"mean_accuracy": float(acc.mean()), "pcc": float(pcc.mean()), "ccc": float(cc.mean())}
    for i, t in enumerate(run.traits):
        out[f"{t}_accuracy"], out[f"{t}_pcc"], out[f"{t}_ccc"] = float(acc[i]), float(pcc[i]), float(cc[i])
    return out


def clip_errors(runs: list[SeedRun], clips: list[str]) -> np.ndarray:
    """(N clips, K traits) absolute error averaged over seeds, rows in ``clips`` order."""
    per_seed = []
    for r in runs:
        index = {c: i for i, c in enumerate(r.clip_ids)}
        per_seed.append(r.abs_errors[[index[c] for c in clips]])
    return np.mean(per_seed, axis=0)


def _common_clips(groups: list[list[SeedRun]]) -> list[str]:
    sets = [set(r.clip_ids) for runs in groups for r in runs]
    common = set.intersection(*sets) if sets else set()
    return sorted(common)


def summarize(runs: Runs, reference: str, order: list[str] | None = None, *, test: str = "wilcoxon",
              resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per variant (``order`` first, then any others found), as written to summary.csv."""
    names = [n for n in (order or []) if n in runs.runs or n in runs.same_as]
    names += sorted(n for n in (*runs.runs, *runs.same_as) if n not in names)
    ref_runs = runs.runs.get(reference)
    if ref_runs is None:
        log.warning("the reference %r has no usable runs: no significance tests", reference)
    traits = _traits(runs)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in runs.runs:
            continue
        own = runs.runs[name]
        row: dict[str, Any] = {"variant": name, "same_as": "", "seeds": len(own),
                               "seed_list": " ".join(str(r.seed) for r in sorted(own, key=lambda r: r.seed))}
        per_seed = [seed_metrics(r) for r in own]
        for key in ["mean_accuracy", "pcc", "ccc", *(f"{t}_{k}" for t in traits for k in KINDS)]:
            row[f"{key}_mean"], row[f"{key}_std"] = stats.mean_std([m[key] for m in per_seed if key in m])
        for key, col in [("mean", "baseline_mean_accuracy"), *((t, f"baseline_{t}_accuracy") for t in traits)]:
            base = [r.baseline[key] for r in own if key in r.baseline]
            row[col] = float(np.mean(base)) if base else math.nan
        row.update(_paired(own, ref_runs, name == reference, traits, test, resamples, seed))
        rows[name] = row
    # duplicates repeat their twin's numbers so the table has a row for every variant asked for
    for name, twin in runs.same_as.items():
        if twin in rows:
            rows[name] = {**rows[twin], "variant": name, "same_as": twin}
        else:
            runs.problems.append(f"{name}: same as {twin}, which has no usable runs")
    ordered = [rows[n] for n in names if n in rows]
    tested = [r for r in ordered if r["variant"] != reference and not r["same_as"]]
    for r, p in zip(tested, stats.holm([r["p_value"] for r in tested])):
        r["p_value_holm"] = p
    for r in ordered:  # duplicates take their twin's adjusted value
        if r["same_as"]:
            r["p_value_holm"] = rows[r["same_as"]].get("p_value_holm", math.nan)
        r.setdefault("p_value_holm", math.nan)
    return ordered


def _traits(runs: Runs) -> list[str]:
    for group in runs.runs.values():
        for r in group:
            return list(r.traits)
    return []


def _paired(own: list[SeedRun], ref: list[SeedRun] | None, is_reference: bool, traits: list[str], test: str,
            resamples: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"clips": math.nan, "delta_mean_accuracy": math.nan, "delta_ci95_low": math.nan,
                           "delta_ci95_high": math.nan, "p_value": math.nan}
    out.update({f"p_value_{t}": math.nan for t in traits})
    if ref is None:
        return out
    clips = _common_clips([own, ref])
    n_own, n_ref = len(set(own[0].clip_ids)), len(set(ref[0].clip_ids))
    if len(clips) < max(n_own, n_ref):
        log.warning("%s vs reference: %d common test clips (of %d / %d): the comparison uses the common ones",
                    own[0].variant, len(clips), n_own, n_ref)
    out["clips"] = len(clips)
    if not clips or is_reference:
        if is_reference:
            out["delta_mean_accuracy"] = 0.0
        return out
    diff = clip_errors(own, clips) - clip_errors(ref, clips)  # (N, K) error difference, variant - reference
    d_mean = diff.mean(axis=1)
    low, high, p_boot = stats.bootstrap_diff(d_mean, resamples, seed)
    out["delta_mean_accuracy"] = -float(d_mean.mean())  # accuracy = 1 - error: the sign flips
    out["delta_ci95_low"], out["delta_ci95_high"] = -high, -low
    out["p_value"] = stats.wilcoxon_p(d_mean) if test == "wilcoxon" else p_boot
    for k, t in enumerate(traits):
        col = diff[:, k]
        out[f"p_value_{t}"] = stats.wilcoxon_p(col) if test == "wilcoxon" else stats.bootstrap_diff(
            col, resamples, seed)[2]
    return out


# --------------------------------------------------------------------------------------------- outputs
def columns(traits: list[str]) -> list[str]:
    cols = ["variant", "same_as", "seeds", "seed_list", "clips"]
    for key in ("mean_accuracy", "pcc", "ccc", *(f"{t}_{k}" for t in traits for k in KINDS)):
        cols += [f"{key}_mean", f"{key}_std"]
    cols += ["baseline_mean_accuracy", *(f"baseline_{t}_accuracy" for t in traits)]
    cols += ["delta_mean_accuracy", "delta_ci95_low", "delta_ci95_high", "p_value",
             "p_value_holm", *(f"p_value_{t}" for t in traits)]
    return cols


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value + 0.0:.6g}"  # + 0.0: no "-0"
    return str(value)


def summary_csv(rows: list[dict[str, Any]], traits: list[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = columns(traits)
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c, "")) for c in cols])
    return buf.getvalue()


def metrics_json(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant, every finite number of its row (DVC metrics)."""
    out = {}
    for r in rows:
        out[r["variant"]] = {k: float(v) for k, v in r.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return out


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def summary_markdown(rows: list[dict[str, Any]], traits: list[str], reference: str, test: str,
                     problems: list[str]) -> str:
    test_name = ("Wilcoxon signed-rank" if test == "wilcoxon" else "paired bootstrap")
    seeds = sorted({r["seeds"] for r in rows})
    lines = ["# Ablation summary", "",
             f"Test split, mean ± standard deviation over seeds ({'/'.join(map(str, seeds))} per variant); "
             "accuracy = 1 − MAE. Δ: mean accuracy minus the reference's "
             f"(`{reference}`), with a paired-bootstrap 95% CI over test clips. p: two-sided {test_name} test "
             "over test clips of the per-clip error (|prediction − label| averaged over traits, then over seeds) "
             "against the reference; Holm: adjusted over all variants.", ""]
    head = ["variant", "mean accuracy", *traits, "Δ vs reference [95% CI]", "p", "p (Holm)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r['variant']}**" if r["variant"] == reference else r["variant"]
        if r["same_as"]:
            name += f" (= {r['same_as']})"
        delta = r["delta_mean_accuracy"]
        ci = ("" if not math.isfinite(r["delta_ci95_low"])
              else f" [{r['delta_ci95_low']:+.3f}, {r['delta_ci95_high']:+.3f}]")
        cells = [name, _pm(r["mean_accuracy_mean"], r["mean_accuracy_std"]),
                 *(_pm(r[f"{t}_accuracy_mean"], r[f"{t}_accuracy_std"]) for t in traits),
                 ("–" if not math.isfinite(delta) else f"{delta:+.4f}") + ci, _p(r["p_value"]), _p(r["p_value_holm"])]
        lines.append("| " + " | ".join(cells) + " |")
    if any(math.isfinite(r["baseline_mean_accuracy"]) for r in rows):
        base = next(r["baseline_mean_accuracy"] for r in rows if math.isfinite(r["baseline_mean_accuracy"]))
        lines += ["", f"Train-mean baseline (predict the training split's mean): mean accuracy {base:.3f}."]
    lines += ["", "## Correlation (PCC / CCC, mean over seeds) and per-trait p-values", ""]
    head = ["variant", "PCC", "CCC", *(f"{t} PCC / CCC / p" for t in traits)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], f"{r['pcc_mean']:.3f}", f"{r['ccc_mean']:.3f}",
                 *(f"{r[f'{t}_pcc_mean']:.3f} / {r[f'{t}_ccc_mean']:.3f} / {_p(r[f'p_value_{t}'])}" for t in traits)]
        lines.append("| " + " | ".join(cells) + " |")
    if problems:
        lines += ["", "## Runs left out", "", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"


def plot_summary(rows: list[dict[str, Any]], traits: list[str], path: str | Path, reference: str) -> Path:
    """Grouped bars: per trait and the mean, one bar per variant, error bars = std over seeds."""
    from bigfive.evaluation.plots import new_figure, save, styled

    @styled
    def draw() -> Path:
        groups = [*traits, "mean"]
        n = len(rows)
        fig = new_figure(min(18.0, 3.5 + len(groups) * (1.1 + 0.12 * n)), 4.8)  # room for bars and the legend
        ax = fig.add_subplot()
        cmap = _colors(n)
        width = 0.8 / max(n, 1)
        x = np.arange(len(groups))
        lows, highs = [], []
        for i, r in enumerate(rows):
            keys = [f"{t}_accuracy" for t in traits] + ["mean_accuracy"]
            means = np.array([r[f"{k}_mean"] for k in keys], dtype=float)
            stds = np.array([r[f"{k}_std"] for k in keys], dtype=float)
            stds = np.where(np.isfinite(stds), stds, 0.0)
            lows.append(np.nanmin(means - stds))
            highs.append(np.nanmax(means + stds))
            label = r["variant"] + (" (reference)" if r["variant"] == reference else "")
            label += f" (= {r['same_as']})" if r["same_as"] else ""
            ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=stds, capsize=1.5, color=cmap[i], label=label,
                   edgecolor="black" if r["variant"] == reference else "none", linewidth=0.8,
                   hatch="//" if r["same_as"] else None, error_kw={"elinewidth": 0.7})
        base_keys = [f"baseline_{t}_accuracy" for t in traits] + ["baseline_mean_accuracy"]
        base = np.array([rows[0].get(k, math.nan) for k in base_keys], dtype=float)
        if np.isfinite(base).any():
            ax.hlines(base, x - 0.45, x + 0.45, colors="#424242", linestyles="--", linewidth=1.0,
                      label="train-mean baseline")
            lows.append(np.nanmin(base))
        ax.set_xticks(x, groups)
        ax.set_xlabel("trait")
        ax.set_ylabel("test accuracy, 1 − MAE (score 0–1)")
        finite = [v for v in lows if math.isfinite(v)]
        top = [v for v in highs if math.isfinite(v)]
        if finite and top:
            ax.set_ylim(max(0.0, min(finite) - 0.02), min(1.0, max(top) + 0.01))
        seeds = "/".join(str(s) for s in sorted({r["seeds"] for r in rows}))
        ax.set_title(f"Ablation on the test split: mean ± std over {seeds} seed(s)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
        return save(fig, path)

    return draw()


def _colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"] if n > 10 else matplotlib.colormaps["tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def write_outputs(rows: list[dict[str, Any]], traits: list[str], out_dir: str | Path, reference: str, test: str,
                  problems: list[str]) -> dict[str, Path]:
    from bigfive.utils.io import write_json, write_text

    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "summary.csv", "md": out_dir / "summary.md", "png": out_dir / "summary.png",
             "metrics": out_dir / "metrics.json"}
    write_text(paths["csv"], summary_csv(rows, traits))
    write_text(paths["md"], summary_markdown(rows, traits, reference, test, problems))
    write_json(paths["metrics"], metrics_json(rows))
    plot_summary(rows, traits, paths["png"], reference)
    return paths


def compare(runs_dir: str | Path, out_dir: str | Path, *, reference: str, variants: list[str] | None = None,
            seeds: list[int] | None = None, test: str = "wilcoxon", resamples: int = 2000,
            seed: int = 0) -> list[dict[str, Any]]:
    """Load, summarise and write everything; returns the summary rows."""
    runs = load_runs(runs_dir, variants, seeds)
    if not runs.runs:
        raise FileNotFoundError(f"{runs_dir}: no usable ablation runs ({len(runs.problems)} left out: "
                                f"{'; '.join(runs.problems[:3])})")
    rows = summarize(runs, reference, variants, test=test, resamples=resamples, seed=seed)
    traits = _traits(runs)
    paths = write_outputs(rows, traits, out_dir, reference, test, runs.problems)
    log.info("compared %d variants (%d runs, %d left out): %s", len(rows), sum(len(v) for v in runs.runs.values()),
             len(runs.problems), ", ".join(str(p) for p in paths.values()))
    for r in rows:
        log.info("%-45s mean accuracy %s  Δ %s  p %s", r["variant"], _pm(r["mean_accuracy_mean"],
                 r["mean_accuracy_std"]), _cell(r["delta_mean_accuracy"]), _p(r["p_value"]))
    return rows


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", action="store_true",
                        help="compare the preprocessing ablation (ablation.flow) instead of the model ablation")
    parser.add_argument("--runs-dir", type=Path, help="default: <results_dir>/runs")
    parser.add_argument("--results-dir", type=Path, help="output folder (default: ablation.results_dir)")
    parser.add_argument("--reference", help="variant every other one is tested against (default: ablation.reference)")
    parser.add_argument("--all-found", action="store_true",
                        help="every run folder found, not only the configured variants x seeds")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params

    params = load_params(args.params)
    cfg = params.ablation
    if args.flow:
        results, reference = Path(cfg.flow.results_dir), cfg.flow.reference
        variants, seeds = cfg.flow.names, list(cfg.flow.seeds)
    else:
        results, reference = Path(cfg.results_dir), cfg.reference
        variants, seeds = list(cfg.variants), list(cfg.seeds)
    if args.all_found:
        variants, seeds = None, None
    out = args.results_dir or results
    compare(args.runs_dir or results / "runs", out, reference=args.reference or reference, variants=variants,
            seeds=seeds, test=cfg.test, resamples=cfg.bootstrap, seed=params.seed)
    return 0
