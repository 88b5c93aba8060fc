"""The documented sweep behind the default recipe: which change makes the interaction trait learn early?

Every candidate x seed trains with ``interaction_probe.py`` (the project's own ``fit`` plus
per-epoch probes), on the main pipeline's features, and the table ranks candidates on
**validation** only: epochs to validation agreeableness >= 0.90 (``epochs_to_interaction``),
how many seeds reach it, and the best validation mean accuracy.

    python pipelines/ablation/interaction_sweep.py --epochs 16 --seeds 0 1 --jobs 2 \\
        --out results/ablation/interaction_sweep
    python pipelines/ablation/interaction_sweep.py --only freeze2 --seeds 2 3 4   # add rows

Candidates are ``CANDIDATES`` below (name -> params overrides); finished candidate x seed folders
are kept, so a rerun only trains what is missing, and the table is rebuilt from every folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
# The recipe before this sweep (static->dynamic cross-attention, GELU feed-forward of 2x, one learning rate),
# stated in full so every row keeps its meaning when params.yaml's defaults change.
BASELINE: dict[str, object] = {"model.fusion": "cross_attention", "model.direction": "static_to_dynamic",
                               "model.ff": "gelu", "model.ff_mult": 2, "model.time_bias_init": 6.0,
                               "train.lr": 0.002, "train.stream_lr_mult": 1.0, "train.freeze_streams_epochs": 0}
# name -> changes to BASELINE, in the order they were tried; each targets the diagnosed cause
# (the streams suppress the cues the fusion needs, and a GELU MLP finds their product slowly)
CANDIDATES: dict[str, dict[str, object]] = {name: {**BASELINE, **changes} for name, changes in {
    "baseline": {},
    "freeze2": {"train.freeze_streams_epochs": 2},
    "bias3": {"model.time_bias_init": 3.0},
    "geglu": {"model.ff": "geglu"},
    "framewise_geglu": {"model.fusion": "framewise", "model.ff": "geglu"},
    "geglu_freeze3": {"model.ff": "geglu", "train.freeze_streams_epochs": 3},
    "geglu_stream_lr_0.3": {"model.ff": "geglu", "train.stream_lr_mult": 0.3},
    "geglu_lr4e-3_stream_lr_0.15": {"model.ff": "geglu", "train.lr": 0.004, "train.stream_lr_mult": 0.15},
    "geglu_ff4_stream_lr_0.3": {"model.ff": "geglu", "model.ff_mult": 4, "train.stream_lr_mult": 0.3},
    "geglu_ff8_stream_lr_0.3": {"model.ff": "geglu", "model.ff_mult": 8, "train.stream_lr_mult": 0.3},
}.items()}
THRESHOLD = 0.90


def run_one(name: str, seed: int, epochs: int, out: Path, stop_after: int | None = None) -> Path:
    folder = out / "runs" / f"{name}-seed{seed}"
    if (folder / "probes.csv").is_file():
        return folder
    cmd = [sys.executable, str(HERE / "interaction_probe.py"), "--epochs", str(epochs), "--seed", str(seed),
           "--out", str(folder)] + [f"--set={k}={v}" for k, v in CANDIDATES[name].items()]
    if stop_after:
        cmd += ["--stop-after", str(stop_after)]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    return folder


def summarize(out: Path) -> pd.DataFrame:
    rows = []
    for csv in sorted((out / "runs").glob("*/probes.csv")):
        name, seed = csv.parent.name.rsplit("-seed", 1)
        df = pd.read_csv(csv)
        trained = df[df.epoch > 0]
        reached = trained[trained.val_acc_agreeableness >= THRESHOLD]
        rows.append({"candidate": name, "seed": int(seed), "epochs": int(trained.epoch.max()),
                     "epochs_to_interaction": int(reached.epoch.min()) if len(reached) else None,
                     "best_val_agreeableness": trained.val_acc_agreeableness.max(),
                     "best_val_mean_accuracy": trained.val_mean_accuracy.max(),
                     "flash_from_static_min": trained.flash_from_static.min(),
                     "flash_from_static_last": trained.flash_from_static.iloc[-1]})
    order = {name: i for i, name in enumerate(CANDIDATES)}
    runs = pd.DataFrame(rows)
    return runs.sort_values(["candidate", "seed"], key=lambda c: c.map(order) if c.name == "candidate" else c)


def table(runs: pd.DataFrame) -> str:
    lines = ["| candidate | epochs | seeds | reaching 0.90 | epochs_to_interaction (per seed) | median | "
             "best val A (mean) | best val mean acc (mean) | flash probe, min over epochs (mean) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, g in runs.groupby("candidate", sort=False):
        e = g.sort_values("seed").epochs_to_interaction
        reached = e.dropna()
        lines.append(f"| {name} | {g.epochs.iloc[0]} | {', '.join(str(v) for v in sorted(g.seed))} | "
                     f"{len(reached)}/{len(g)} | "
                     f"{', '.join('never' if pd.isna(v) else str(int(v)) for v in e)} | "
                     f"{reached.median() if len(reached) == len(g) else 'n/a'} | "
                     f"{g.best_val_agreeableness.mean():.3f} | {g.best_val_mean_accuracy.mean():.4f} | "
                     f"{g.flash_from_static_min.mean():.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop each run after this epoch (its learning-rate schedule is still that of --epochs)")
    ap.add_argument("--out", type=Path, default=Path("results/ablation/interaction_sweep"))
    args = ap.parse_args()
    jobs = [(n, s) for s in args.seeds for n in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        for folder in pool.map(lambda job: run_one(*job, args.epochs, args.out, args.stop_after), jobs):
            print("done", folder, flush=True)
    runs = summarize(args.out)
    runs.to_csv(args.out / "runs.csv", index=False, float_format="%.4f")
    md = table(runs)
    (args.out / "summary.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
