"""The ablation's tables: summary.csv (one row per variant), primaries.csv, metrics.json (DVC metrics) and
summary.md (primaries first, with Holm; then the exploratory table with Benjamini-Hochberg q-values)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from bigfive.ablation.runs import KINDS
from bigfive.ablation.summary import TESTS, _ci_key

PRIMARY_COLUMNS = ["primary", "variant", "versus", "trait", "kind", "margin", "seeds", "delta", "ci_low", "ci_high",
                   "ci_level", "test", "p_value", "p_floor", "p_value_holm", "decision"]


def columns(traits: list[str]) -> list[str]:
    cols = ["variant", "same_as", "seeds", "seed_list", "clips"]
    for key in ("mean_accuracy", "pcc", "ccc", *(f"{t}_{k}" for t in traits for k in KINDS)):
        cols += [f"{key}_mean", f"{key}_std"]
        if key.endswith("accuracy"):
            cols += [f"{key}_ci95_low", f"{key}_ci95_high"]
    cols += ["val_mean_accuracy_mean", "val_mean_accuracy_std", "val_win_share",
             "epochs_to_interaction", "epochs_to_interaction_reached", "epochs_to_interaction_seeds"]
    cols += ["baseline_mean_accuracy", *(f"baseline_{t}_accuracy" for t in traits)]
    cols += ["delta_mean_accuracy", "delta_ci95_low", "delta_ci95_high", "p_value", "p_value_q", "p_floor"]
    for t in traits:
        cols += [f"delta_{t}_accuracy", f"delta_{t}_ci95_low", f"delta_{t}_ci95_high", f"p_value_{t}",
                 f"p_value_{t}_q"]
    return cols


def cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value + 0.0:.6g}"  # + 0.0: no "-0"
    return str(value)


def to_csv(rows: list[dict[str, Any]], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([cell(r.get(c, "")) for c in cols])
    return buf.getvalue()


def summary_csv(rows: list[dict[str, Any]], traits: list[str]) -> str:
    return to_csv(rows, columns(traits))


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def metrics_json(rows: list[dict[str, Any]], primaries: list[dict[str, Any]] | None = None
                 ) -> dict[str, dict[str, float]]:
    """Per variant, every finite number of its row, and per primary (``primary/<name>``) its numbers (DVC metrics)."""
    out = {r["variant"]: _numbers(r) for r in rows}
    out.update({f"primary/{p['primary']}": _numbers(p) for p in primaries or []})
    return out


def pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def fmt_p(p: float, raw: float = math.nan, floor: float = 0.0) -> str:
    """A p-value (or an adjusted one, ``p``, of the raw ``raw``); where the raw p sits at the test's resampling
    floor the true value may be smaller, so the adjusted value is printed as a bound, "< X (floor)"."""
    if not math.isfinite(p):
        return "–"
    if floor > 0 and math.isfinite(raw) and raw <= floor * (1 + 1e-9):
        return f"< {p:.2g} (floor)"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _delta(r: dict[str, Any], key: str) -> str:
    delta, low, high = r[f"delta_{key}"], r[_ci_key(key, "low")], r[_ci_key(key, "high")]
    if not math.isfinite(delta):
        return "–"
    return f"{delta:+.4f}" + (f" [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else "")


def _interaction_cell(r: dict[str, Any]) -> str:
    n = r["epochs_to_interaction_seeds"]
    if not n:
        return "–"
    k = r["epochs_to_interaction_reached"]
    return f"{r['epochs_to_interaction']:g} ({k}/{n})" if k else f"never (0/{n})"


def _share(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}"


def summary_markdown(rows: list[dict[str, Any]], traits: list[str], reference: str, test: str,
                     problems: list[str], resamples: int = 10000, primaries: list[dict[str, Any]] | None = None,
                     alpha: float = 0.05) -> str:
    lines = ["# Ablation summary", "", *_primaries_md(primaries or [], alpha), *_intro(rows, traits, reference, test,
                                                                                      resamples, alpha)]
    head = ["variant", "mean accuracy", *traits, f"Δ vs reference [{100 * (1 - alpha):g}% CI]", "p",
            "q (BH, exploratory)", "val wins", "interaction epoch"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r['variant']}**" if r["variant"] == reference else r["variant"]
        if r["same_as"]:
            name += f" (= {r['same_as']})"
        floor = r.get("p_floor", 0.0)
        cells = [name, pm(r["mean_accuracy_mean"], r["mean_accuracy_std"]),
                 *(pm(r[f"{t}_accuracy_mean"], r[f"{t}_accuracy_std"]) for t in traits),
                 _delta(r, "mean_accuracy"), fmt_p(r["p_value"], r["p_value"], floor),
                 fmt_p(r["p_value_q"], r["p_value"], floor), _share(r["val_win_share"]), _interaction_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    if any(math.isfinite(r["baseline_mean_accuracy"]) for r in rows):
        base = next(r["baseline_mean_accuracy"] for r in rows if math.isfinite(r["baseline_mean_accuracy"]))
        lines += ["", f"Train-mean baseline (predict the training split's mean): mean accuracy {base:.3f}."]
    lines += ["", f"## Per trait (exploratory): Δ accuracy vs reference [{100 * (1 - alpha):g}% CI], q (BH)", ""]
    head = ["variant", *traits]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        floor = r.get("p_floor", 0.0)
        cells = [r["variant"], *(f"{_delta(r, f'{t}_accuracy')}, "
                                 f"{fmt_p(r[f'p_value_{t}_q'], r[f'p_value_{t}'], floor)}" for t in traits)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Correlation (PCC / CCC, mean over seeds)", ""]
    head = ["variant", "PCC", "CCC", *(f"{t} PCC / CCC" for t in traits)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], f"{r['pcc_mean']:.3f}", f"{r['ccc_mean']:.3f}",
                 *(f"{r[f'{t}_pcc_mean']:.3f} / {r[f'{t}_ccc_mean']:.3f}" for t in traits)]
        lines.append("| " + " | ".join(cells) + " |")
    if problems:
        lines += ["", "## Runs left out", "", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"


def _intro(rows: list[dict[str, Any]], traits: list[str], reference: str, test: str, resamples: int,
           alpha: float) -> list[str]:
    seeds = sorted({r["seeds"] for r in rows})
    m = sum(1 for r in rows if r["variant"] != reference and not r["same_as"]
            for k in ["p_value", *(f"p_value_{t}" for t in traits)] if math.isfinite(r.get(k, math.nan)))
    ci = ("by inverting the same test (the CI excludes 0 exactly when p < alpha)" if test in ("seed_t", "permutation")
          else
          f"from a hierarchical bootstrap over seeds and test clips ({resamples} resamples, percentile)")
    return ["## Exploratory comparisons", "",
            f"Test split, mean ± standard deviation over seeds ({'/'.join(map(str, seeds))} per variant); "
            f"accuracy = 1 − MAE. Δ: mean accuracy minus the reference's (`{reference}`), "
            f"{100 * (1 - alpha):g}% CI {ci}. p: {TESTS[test]} (two-sided). q: Benjamini-Hochberg over all {m} "
            "p-values of both tables together (overall and per trait); these cells are exploratory, only the "
            "primaries above carry a family-wise claim. val wins: share of (variant seed, reference seed) pairs "
            "where the variant's best validation mean accuracy is higher (ties ½). Interaction: median epoch at "
            "which validation accuracy on the interaction trait first reached the threshold, over the seeds that "
            "reached it (reached / seeds).", ""]


def _primaries_md(primaries: list[dict[str, Any]], alpha: float) -> list[str]:
    if not primaries:
        return []
    lines = ["## Primary comparisons (declared in params.yaml before the run; Holm over these only)", "",
             "| primary | comparison | trait | hypothesis | seeds | Δ [CI] | p | p (Holm) | decision |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in primaries:
        hyp = {"superiority": f"Δ > {p['margin']:g}", "equivalence": f"\\|Δ\\| < {p['margin']:g} (TOST)",
               "two_sided": "Δ ≠ 0"}[p["kind"]]
        ci = (f"{p['delta']:+.4f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] ({100 * p['ci_level']:g}%)"
              if math.isfinite(p["delta"]) else "–")
        lines.append(f"| {p['primary']} | {p['variant']} vs {p['versus']} | {p['trait']} | {hyp} | {p['seeds']} | "
                     f"{ci} | {fmt_p(p['p_value'], p['p_value'], p.get('p_floor', 0.0))} | "
                     f"{fmt_p(p['p_value_holm'], p['p_value'], p.get('p_floor', 0.0))} | {p['decision']} |")
    test = next((p["test"] for p in primaries if p.get("test")), "permutation")
    name = {"permutation": "seed permutation test (exact over the labelings of whole seeds)",
            "seed_t": "seed-level Welch t (ablation.clip_term: with the clip-paired variance or not)"}[test]
    return lines + ["", f"The table's {name}, one-sided or two one-sided tests; decisions at alpha = {alpha:g} after "
                        "Holm. "
                        "A one-sided or equivalence claim holds exactly when its (1 − 2 alpha) CI clears the margin.",
                    ""]
