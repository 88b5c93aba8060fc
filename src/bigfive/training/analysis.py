"""Where a training run's time went, and what to change: ``models/training_analysis.{md,json,png}``.

Per epoch the loop measures the time blocked on the next batch (data wait), forward/backward/step
(compute: the training pass less the data wait; CUDA synchronised once per epoch), validation, and
the rest (checkpoints, logging). The first epoch is reported but left out of the averages when
there are more, since it pays one-off warm-up costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigfive.utils.io import atomic_path, write_json, write_text

DATA_WAIT_HIGH = 0.20  # share of step time spent waiting for data that is worth acting on
EVAL_HIGH = 0.25  # share of epoch time spent validating
OTHER_HIGH = 0.15  # share of epoch time in checkpoints/logging


@dataclass(frozen=True)
class RunContext:
    device: str
    num_workers: int
    batch_size: int
    compile: bool
    world_size: int
    train_clips: int
    val_clips: int


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def epoch_rows(history: list[dict[str, float]]) -> list[dict[str, float]]:
    rows = []
    for h in history:
        epoch_s = h.get("epoch_time_s", 0.0)
        data, compute, evals = h.get("data_wait_s", 0.0), h.get("compute_s", 0.0), h.get("eval_s", 0.0)
        rows.append({"epoch": int(h["epoch"]), "epoch_s": epoch_s, "data_wait_s": data, "compute_s": compute,
                     "eval_s": evals, "other_s": max(0.0, epoch_s - data - compute - evals),
                     "data_wait_share": h.get("data_wait_share", 0.0),
                     "throughput_clips_s": h.get("throughput_clips_s", 0.0)})
    return rows


def analyse(history: list[dict[str, float]], ctx: RunContext) -> dict[str, Any]:
    """Summary numbers and concrete recommendations from the per-epoch timing metrics."""
    rows = epoch_rows(history)
    steady = rows[1:] if len(rows) > 1 else rows
    epoch_s = _mean([r["epoch_s"] for r in steady])
    summary = {
        "epochs": len(rows),
        "total_s": sum(r["epoch_s"] for r in rows),
        "epoch_s": epoch_s,
        "data_wait_s": _mean([r["data_wait_s"] for r in steady]),
        "compute_s": _mean([r["compute_s"] for r in steady]),
        "eval_s": _mean([r["eval_s"] for r in steady]),
        "other_s": _mean([r["other_s"] for r in steady]),
        "data_wait_share": _mean([r["data_wait_share"] for r in steady]),
        "throughput_clips_s": _mean([r["throughput_clips_s"] for r in steady]),
    }
    summary["eval_share"] = summary["eval_s"] / epoch_s if epoch_s > 0 else 0.0
    summary["other_share"] = summary["other_s"] / epoch_s if epoch_s > 0 else 0.0
    return {"context": ctx.__dict__, "summary": summary, "epochs": rows,
            "recommendations": recommend(summary, rows, ctx)}


def recommend(s: dict[str, float], rows: list[dict[str, float]], ctx: RunContext) -> list[str]:
    out = []
    wait = s["data_wait_share"]
    if wait > DATA_WAIT_HIGH:
        if ctx.num_workers == 0:
            out.append(f"data wait is {wait:.0%} of step time: raise `train.num_workers` (now 0: loading and "
                       "augmentation run in the training process)")
        else:
            out.append(f"data wait is {wait:.0%} of step time even with `train.num_workers: {ctx.num_workers}`: "
                       "raise it further, or keep the feature arrays on local disk / in the page cache")
    else:
        where = "the GPU" if ctx.device.startswith("cuda") else "the CPU"
        hint = "try `train.compile: true`" if not ctx.compile else "the model is already compiled"
        if ctx.device.startswith("cuda"):
            hint += f", or a larger `train.batch_size` (now {ctx.batch_size}) to fill the GPU"
        else:
            hint += " or a GPU (bf16 autocast is automatic there)"
        out.append(f"compute-bound on {where} (data wait {wait:.0%} of step time): {hint}")
        if ctx.num_workers > 0 and wait < 0.02:
            out.append(f"data wait is only {wait:.1%} with {ctx.num_workers} workers: fewer workers free CPU cores "
                       "for compute")
    if s["eval_share"] > EVAL_HIGH:
        out.append(f"validation takes {s['eval_share']:.0%} of epoch time ({ctx.val_clips} val vs "
                   f"{ctx.train_clips} train clips): a fixed per-epoch cost; use fewer, longer epochs or a "
                   "smaller validation split")
    if s["other_share"] > OTHER_HIGH:
        out.append(f"checkpointing and logging take {s['other_share']:.0%} of epoch time: expected only for "
                   "tiny epochs; for real runs check the disk under `train.models_dir` and the MLflow store")
    if len(rows) > 1 and s["epoch_s"] > 0 and rows[0]["epoch_s"] > 1.5 * s["epoch_s"]:
        out.append(f"the first epoch took {rows[0]['epoch_s'] / s['epoch_s']:.1f}x a steady epoch (one-off warm-up: "
                   "page cache, allocator, compilation); left out of the averages")
    if ctx.world_size == 1 and ctx.device.startswith("cuda") and wait <= DATA_WAIT_HIGH:
        out.append("more GPUs: run the same command under `torchrun --nproc_per_node=N` (DDP)")
    return out


def to_markdown(report: dict[str, Any]) -> str:
    s, c = report["summary"], report["context"]
    lines = [
        "# Training-time analysis",
        "",
        f"Device `{c['device']}` x{c['world_size']}, batch size {c['batch_size']}, num_workers {c['num_workers']}, "
        f"compile {c['compile']}; {c['train_clips']} training / {c['val_clips']} validation clips.",
        "",
        f"- steady epoch: **{s['epoch_s']:.2f} s** = data wait {s['data_wait_s']:.2f} s + compute "
        f"{s['compute_s']:.2f} s + validation {s['eval_s']:.2f} s + other {s['other_s']:.2f} s",
        f"- data wait: **{s['data_wait_share']:.1%}** of step time; validation {s['eval_share']:.1%} of epoch time",
        f"- training throughput: **{s['throughput_clips_s']:.1f} clips/s**",
        f"- total: {s['total_s']:.1f} s over {s['epochs']} epochs",
        "",
        "## Recommendations",
        "",
        *[f"- {r}" for r in report["recommendations"]],
        "",
        "## Per epoch",
        "",
        "| epoch | time (s) | data wait (s) | compute (s) | validation (s) | other (s) | data wait share | clips/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["epochs"]:
        lines.append(f"| {r['epoch']} | {r['epoch_s']:.2f} | {r['data_wait_s']:.2f} | {r['compute_s']:.2f} | "
                     f"{r['eval_s']:.2f} | {r['other_s']:.2f} | {r['data_wait_share']:.1%} | "
                     f"{r['throughput_clips_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Stacked per-epoch time split (s) with throughput (clips/s) on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["epochs"]
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=150)
    bottom = [0.0] * len(rows)
    for key, label, color in (("data_wait_s", "data wait", "#d62728"), ("compute_s", "compute", "#1f77b4"),
                              ("eval_s", "validation", "#2ca02c"), ("other_s", "checkpoint + logging", "#7f7f7f")):
        values = [r[key] for r in rows]
        ax.bar(epochs, values, bottom=bottom, label=label, color=color, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values)]
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("time per epoch (s)")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["throughput_clips_s"] for r in rows], "k.-", label="throughput")
    ax2.set_ylabel("training throughput (clips/s)")
    ax2.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, fontsize=7, loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False)
    ax.set_title("Training time per epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(report: dict[str, Any], output_dir: Path, figure: bool = True) -> list[Path]:
    """``training_analysis.md`` / ``.json`` (+ ``.png``) in ``output_dir``; returns the paths."""
    md, js, png = (output_dir / f"training_analysis.{ext}" for ext in ("md", "json", "png"))
    write_text(md, to_markdown(report))
    write_json(js, report)
    paths = [md, js]
    if figure and report["epochs"]:
        plot(report, png)
        paths.append(png)
    return paths
