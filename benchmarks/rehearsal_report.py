"""The rehearsal's report: per-stage cost per clip and its projection to the full dataset (JSON + markdown).

    python benchmarks/rehearsal_report.py        # after the measure steps of pipelines/rehearsal/dvc.yaml

Reads ``<rehearsal.dir>/measure/*.json`` (benchmarks/rehearsal.py) and writes
``<rehearsal.results_dir>/report.json`` and ``report.md``; prints the JSON as its last line.

Projection. A stage's CPU time less its fixed cost (the main process's start and, for the pooled
faces and flow stages, one start per worker: ``probe_*``) is its marginal cost; divided by N it is
the CPU-seconds per clip. Full dataset on this machine: pooled stages run on every core, ingest and
features on one, so ``hours = (fixed + full x per clip) / cores`` (pooled) or ``fixed + full x per clip``
(single-process). CPU time is the right base on a shared machine: other jobs stretch the wall clock,
not the CPU-seconds (the wall-clock projection, which they inflate, is reported beside it).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bigfive.config import load_params  # noqa: E402
from bigfive.config.base import load_yaml  # noqa: E402
from bigfive.utils.io import write_json, write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PREPROCESS = ("raw", "faces", "flow", "features")  # what the target counts: downloads in, features out
POOLED = {"faces": "probe_faces_worker", "flow": "probe_flow_worker"}  # stages with a worker per core
STAGES = ("generate", *PREPROCESS, "train", "evaluate")


def _load(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no measurement (run `dvc repro pipelines/rehearsal/dvc.yaml`)")
    return json.loads(path.read_text())


def _peak_child(m: dict[str, Any]) -> float:
    return max((c["mb"] for c in m["peak_rss_mb_children"] if c["name"] != "ffmpeg"), default=0.0)


def _quality(faces_dir: Path) -> dict[str, Any]:
    """What the faces stage made of the generated clips: statuses, detection rate, the frame sizes seen."""
    path = faces_dir / "quality.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r["status"] == "ok"]
    sizes: dict[str, int] = {}
    for r in rows:
        key = f"{r['width']}x{r['height']}"
        sizes[key] = sizes.get(key, 0) + 1
    return {"clips": len(rows), "ok": len(ok), "excluded": sum(r["status"] == "excluded" for r in rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "mean_detection_rate": round(sum(float(r["detection_rate"]) for r in ok) / max(len(ok), 1), 4),
            "frame_sizes": sizes}


STEPS_OF = {"faces": ("decode", "detect", "crops", "save_npz"), "flow": ("flow",)}


def _probe_share(steps: dict[str, Any] | None, stage: str) -> float:
    """CPU-s per clip of ``stage`` from the per-step probe (0 when there is none)."""
    if not steps or not steps.get("clips") or stage not in STEPS_OF:
        return 0.0
    return sum(steps["cpu_s_per_clip"].get(k) or 0.0 for k in STEPS_OF[stage])


def build(settings: dict[str, Any]) -> dict[str, Any]:
    base = Path(settings["dir"])
    params = load_params(base / "params.yaml")
    folder = base / "measure"
    m = {name: _load(folder, name) for name in (*STAGES, "probe_main", *POOLED.values())}
    n = params.sample.n_train + params.sample.n_val + params.sample.n_test
    full = int(settings["full_clips"])
    cores = int(m["faces"]["cpu_count"] or os.cpu_count() or 1)
    workers = min(params.preprocess.workers or cores, n)
    main_fixed = m["probe_main"]["cpu_s"]
    steps = json.loads((folder / "parts.json").read_text()) if (folder / "parts.json").exists() else None
    stages: dict[str, Any] = {}
    for name in STAGES:
        r = m[name]
        fixed = main_fixed + (workers * m[POOLED[name]]["cpu_s"] if name in POOLED else 0.0)
        if name not in PREPROCESS:
            fixed = 0.0  # generate, train, evaluate: reported as measured, not projected
        marginal = max(0.0, r["cpu_s"] - fixed) / n
        # A cheap stage's per-clip cost can vanish in the noise of its start-up under load (flow: ~0.01 CPU-s
        # a clip against ~5 s per worker start); the per-step probe then bounds it from below.
        marginal = max(marginal, _probe_share(steps, name))
        out_bytes = sum(r["bytes"].values())
        row = {
            "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
            "wall_s_per_clip": round(r["wall_s"] / n, 4), "cpu_s_per_clip": round(r["cpu_s"] / n, 4),
            "fixed_cpu_s": round(fixed, 3), "marginal_cpu_s_per_clip": round(marginal, 4),
            "parallel_cpu_share": round(r["cpu_s"] / max(r["wall_s"], 1e-9), 2),
            "peak_rss_mb_main": r["peak_rss_mb_main"], "peak_rss_mb_per_worker": _peak_child(r),
            "workers_seen": sum(1 for c in r["peak_rss_mb_children"] if c["name"] != "ffmpeg"),
            "bytes": out_bytes, "bytes_per_clip": round(out_bytes / n),
            "load_average_at_end": [round(x, 2) for x in r["load_average"]],
        }
        if name in PREPROCESS:
            lanes = cores if name in POOLED else 1
            row["projected_hours_full"] = round((fixed + full * marginal) / lanes / 3600, 3)
            row["projected_hours_full_from_wall"] = round(r["wall_s"] / n * full / 3600, 3)
            row["projected_gb_full"] = round(out_bytes / n * full / 1e9, 2)
        stages[name] = row
    pre = {k: stages[k] for k in PREPROCESS}
    total_h = sum(s["projected_hours_full"] for s in pre.values())
    per_clip_cpu = sum(s["marginal_cpu_s_per_clip"] for s in pre.values())
    disk = {k: stages[k]["projected_gb_full"] for k in PREPROCESS}
    disk["downloads"] = round(stages["generate"]["bytes_per_clip"] * full / 1e9, 2)
    largest = max(disk, key=disk.get)
    n_train = params.sample.n_train
    metrics_path = Path(params.evaluate.results_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    target = float(settings["target_hours"])
    return {
        "clips": n, "full_clips": full, "cores": cores, "preprocess_workers": workers,
        "clip": {"seconds": params.sample.seconds, "fps": params.sample.fps,
                 "size": f"{params.sample.width}x{params.sample.height}", "codec": params.sample.codec,
                 "other_sizes": [f"{w}x{h}" for w, h in params.sample.other_sizes]},
        "config": {"frames": params.preprocess.frames, "crop_size": params.preprocess.crop_size,
                   "static_backbone": params.model.static_backbone, "freeze_until": params.model.freeze_until,
                   "dynamic_backbone": params.model.dynamic_backbone, "batch_size": params.train.batch_size,
                   "epochs": params.train.epochs, "num_workers": params.train.num_workers},
        "fixed_cpu_s": {"main_process": main_fixed, "faces_worker": m["probe_faces_worker"]["cpu_s"],
                        "flow_worker": m["probe_flow_worker"]["cpu_s"]},
        "stages": stages,
        "preprocessing": {
            "cpu_s_per_clip": round(per_clip_cpu, 4),
            "clips_per_core_hour": round(3600 / per_clip_cpu) if per_clip_cpu else None,
            "projected_hours_full": round(total_h, 3),
            "projected_hours_full_from_wall": round(sum(s["projected_hours_full_from_wall"] for s in pre.values()), 3),
            "target_hours": target, "target_met": bool(total_h <= target),
        },
        "disk_gb_full": disk, "largest_on_disk": largest,
        "disk_gb_full_total": round(sum(disk.values()), 2),
        "train": {"clips": n_train, "epochs": params.train.epochs,
                  "cpu_s_per_clip_epoch": round(m["train"]["cpu_s"] / (n_train * params.train.epochs), 3)},
        "steps_cpu_s_per_clip": steps,
        "faces_quality": _quality(Path(params.preprocess.faces_dir)),
        "evaluate_mean_accuracy": _accuracies(metrics),
    }


def markdown(r: dict[str, Any]) -> str:
    c, pre = r["clip"], r["preprocessing"]
    lines = [
        "# Real-size rehearsal",
        "",
        f"{r['clips']} generated clips ({c['seconds']:g} s, {c['fps']} fps, {c['size']} {c['codec']}; one clip each "
        f"of {', '.join(c['other_sizes'])}) through the pipeline with configs/chalearn.yaml at "
        f"T = {r['config']['frames']}, S = {r['config']['crop_size']} on {r['cores']} cores shared with other jobs. "
        "`dvc repro pipelines/rehearsal/dvc.yaml` rewrites this file; the figures are in report.json.",
        "",
        "## Preprocessing of the full dataset",
        "",
        f"**Projected: {pre['projected_hours_full']:.2f} h for {r['full_clips']:,} clips on {r['cores']} cores** "
        f"(target {pre['target_hours']:g} h: {'met' if pre['target_met'] else 'NOT met'}); "
        f"{pre['cpu_s_per_clip']:.3f} CPU-s per clip, {pre['clips_per_core_hour']:,} clips per core-hour. "
        f"From the wall clock of this shared run instead: {pre['projected_hours_full_from_wall']:.2f} h.",
        "",
        "| stage | wall s | CPU s | CPU s / clip | fixed CPU s | marginal CPU s / clip | peak RSS MB main / worker "
        "| MB / clip on disk | projected h (full) | projected GB (full) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["stages"].items():
        proj = f"{s['projected_hours_full']:.3f}" if "projected_hours_full" in s else "-"
        gb = f"{s['projected_gb_full']:.1f}" if "projected_gb_full" in s else "-"
        lines.append(f"| {name} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s['cpu_s_per_clip']:.3f} | "
                     f"{s['fixed_cpu_s']:.1f} | {s['marginal_cpu_s_per_clip']:.3f} | {s['peak_rss_mb_main']:.0f} / "
                     f"{s['peak_rss_mb_per_worker']:.0f} | {s['bytes_per_clip'] / 1e6:.2f} | {proj} | {gb} |")
    disk = r["disk_gb_full"]
    lines += [
        "",
        "generate renders the clips (not part of the projection: the real data arrives as downloads); raw is "
        "the ingest of the download archives. Fixed CPU s: the main process's and each worker's start "
        f"(main {r['fixed_cpu_s']['main_process']:.1f} s, faces worker {r['fixed_cpu_s']['faces_worker']:.1f} s, "
        f"flow worker {r['fixed_cpu_s']['flow_worker']:.1f} s), paid once per run.",
        "",
        *_steps_table(r.get("steps_cpu_s_per_clip")),
        "## Disk for the full dataset",
        "",
        *_one_row_table(disk, [f"{v:.1f} GB" for v in disk.values()], ("total", f"{r['disk_gb_full_total']:.1f} GB")),
        "",
        f"Largest: **{r['largest_on_disk']}**. The downloads figure is the generated clips' size: synthetic "
        "clips (a face on a smooth background) compress far better than YouTube footage, so the real "
        "archives are larger; every later stage stores fixed-size arrays and does not depend on it.",
        "",
        "## Train and evaluate (the path, not a score)",
        "",
        f"{r['train']['clips']} training clips, {r['train']['epochs']} epochs, batch {r['config']['batch_size']}, "
        f"{r['config']['static_backbone']} (a random state dict stands in for the VGGFace2 file, SHA-256 checked) "
        f"frozen to {r['config']['freeze_until']} + {r['config']['dynamic_backbone']}: "
        f"{r['train']['cpu_s_per_clip_epoch']:.2f} CPU-s per clip-epoch on this CPU. "
        f"Mean accuracy after the short train: {r['evaluate_mean_accuracy']} (not a result: 2 epochs on "
        f"{r['train']['clips']} clips).",
        "",
        _quality_line(r["faces_quality"]),
        "",
    ]
    return "\n".join(lines)


def _accuracies(metrics: dict[str, Any]) -> dict[str, float]:
    """Mean accuracy per split: metrics.json holds the test split at the top, the others under their names."""
    out = {k: round(v["mean_accuracy"], 4) for k, v in metrics.items() if isinstance(v, dict) and "mean_accuracy" in v}
    if "mean_accuracy" in metrics:
        out["test"] = round(metrics["mean_accuracy"], 4)
    return out


def _quality_line(q: dict[str, Any]) -> str:
    if not q:
        return ""
    sizes = ", ".join(f"{n} x {size}" for size, n in q["frame_sizes"].items())
    return (f"Faces stage on the generated clips: {q['ok']} of {q['clips']} ok ({q['excluded']} excluded, "
            f"{q['failed']} failed), mean detection rate {q['mean_detection_rate']:.3f}; frame sizes {sizes}.")


def _one_row_table(names: Any, cells: list[str], last: tuple[str, str]) -> list[str]:
    return ["| " + " | ".join([*names, last[0]]) + " |", "|" + "---|" * (len(cells) + 1),
            "| " + " | ".join([*cells, last[1]]) + " |"]


def _steps_table(steps: dict[str, Any] | None) -> list[str]:
    """Where a clip's faces + flow CPU time goes (benchmarks/rehearsal_probe.py parts)."""
    if not steps or not steps.get("clips"):
        return []
    cost = steps["cpu_s_per_clip"]
    total = sum(v for v in cost.values() if v is not None)
    return [
        f"Inside faces + flow, per clip (median of {steps['clips']} clips, {', '.join(steps['sizes'])}; one thread, "
        "CPU-seconds):",
        "",
        *_one_row_table(cost, [f"{v:.3f}" for v in cost.values()], ("sum", f"{total:.3f}")),
        "",
    ]


def main() -> int:
    os.chdir(ROOT)
    settings = (load_yaml(Path("pipelines/rehearsal/params.yaml")) or {})["rehearsal"]
    report = build(settings)
    out = Path(settings["results_dir"])
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
