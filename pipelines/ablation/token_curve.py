"""Which fusion reads a cross-time trait, at which training-set size? The project's fusions on synthetic tokens.

No video and no CNNs: each clip is T = 8 static and 8 dynamic tokens that show its events directly
(plus noise), projected to ``model.embed_dim`` by a learned linear map per stream (as the streams'
own projections do), then the project's own fusion module (``build_fusion``) and head type. Five
outputs, like the sample's traits (docs/sample.md; the cross-time design of issue 23):

- O: a static level, E and N: two dynamic levels (no interaction needed);
- A (same-time, agreeableness): 3 flashes (static) and 3 nods (dynamic); factor = coincidences / 3;
- C (cross-time, conscientiousness): K = 2 cue kinds (static) and 2 motion kinds (dynamic); pair k's
  motion is L_k in {1, 2, 3} steps after or before its cue (order drawn per pair), all four events on
  distinct steps; factor = share of pairs whose motion follows its cue.

label = 0.1 + 0.8 * factor + N(0, noise); accuracy = 1 - MAE (the ChaLearn metric). The best
epoch is chosen on validation mean accuracy, and test accuracy is reported at that epoch.

    nice python pipelines/ablation/token_curve.py --jobs 2            # the curve (resumes from curve.csv)
    python pipelines/ablation/token_curve.py --plot-only              # table + figure from curve.csv

Writes ``curve.csv`` (one row per run), ``curve.md`` (table) and ``curve.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bigfive.config import load_params
from bigfive.models.fusion import build_fusion
from bigfive.models.network import Head, count_parameters

T = 8
TRAITS = ("O", "C", "E", "A", "N")
FEATURES = 4  # static: O level, flash, cue kind 0, cue kind 1 / dynamic: E level, N level, nod, motion kind 0/1 (5)
# name -> model overrides; relative_time and the flat-head candidates start half their heads flat
VARIANTS: dict[str, dict] = {
    "concat": {"fusion": "concat"},
    "framewise": {"fusion": "framewise"},
    "framewise_conv": {"fusion": "framewise_conv"},
    "relative_time": {"fusion": "relative_time", "time_bias_flat_heads": 2},
    "cross_attention": {"fusion": "cross_attention"},
    "ca_flat_heads": {"fusion": "cross_attention", "time_bias_flat_heads": 2},
    "ca_rel_values": {"fusion": "cross_attention", "value_rel_pos": True},
    "ca_rel_values_flat_heads": {"fusion": "cross_attention", "value_rel_pos": True, "time_bias_flat_heads": 2},
}
FIELDS = ["variant", "n_train", "seed", "fusion_params", "best_epoch", "seconds",
          *(f"test_{t}" for t in TRAITS), "test_mean", "baseline_C", "baseline_A"]


def cross_time_events(rng: np.random.Generator) -> tuple[list[int], list[int], float]:
    """Cue steps and motion steps for kinds 0 and 1, and the factor (share of pairs whose motion follows)."""
    while True:
        cues = rng.choice(T, 2, replace=False)
        lags = rng.integers(1, 4, 2)
        after = rng.random(2) < 0.5
        motions = cues + np.where(after, lags, -lags)
        steps = {*cues.tolist(), *motions.tolist()}
        if len(steps) == 4 and motions.min() >= 0 and motions.max() < T:
            return cues.tolist(), motions.tolist(), float(after.mean())


def same_time_events(rng: np.random.Generator) -> tuple[list[int], list[int], float]:
    """3 flash steps and 3 nod steps, of which c (uniform 0..3) coincide; factor = c / 3."""
    c = int(rng.integers(0, 4))
    steps = rng.permutation(T)[:6 - c].tolist()
    flashes = steps[:3]
    nods = steps[:c] + steps[3:6 - c]
    return flashes, nods, c / 3


def make_split(n: int, seed: int, noise: float, label_noise: float) -> tuple[torch.Tensor, ...]:
    """(static (n, T, 4), dynamic (n, T, 5), labels (n, 5)) for n clips."""
    rng = np.random.default_rng(seed)
    s = np.zeros((n, T, FEATURES), np.float32)
    d = np.zeros((n, T, FEATURES + 1), np.float32)
    factors = np.zeros((n, 5), np.float32)
    for i in range(n):
        levels = rng.random(3)
        cues, motions, factor_c = cross_time_events(rng)
        flashes, nods, factor_a = same_time_events(rng)
        s[i, :, 0] = levels[0]
        d[i, :, 0], d[i, :, 1] = levels[1], levels[2]
        s[i, flashes, 1] = 1
        d[i, nods, 2] = 1
        for k in range(2):
            s[i, cues[k], 2 + k] = 1
            d[i, motions[k], 3 + k] = 1
        factors[i] = (levels[0], factor_c, levels[1], factor_a, levels[2])
    s += rng.normal(0, noise, s.shape).astype(np.float32)
    d += rng.normal(0, noise, d.shape).astype(np.float32)
    y = 0.1 + 0.8 * factors + rng.normal(0, label_noise, factors.shape).astype(np.float32)
    return torch.from_numpy(s), torch.from_numpy(d), torch.from_numpy(np.clip(y, 0, 1))


class TokenModel(nn.Module):
    """Learned token projections -> the project's fusion -> the project's head type -> sigmoid."""

    def __init__(self, cfg, frames: int = T):
        super().__init__()
        self.proj_s = nn.Linear(FEATURES, cfg.embed_dim)
        self.proj_d = nn.Linear(FEATURES + 1, cfg.embed_dim)
        self.fusion = build_fusion(cfg, frames)
        self.head = Head(self.fusion.out_dims[0], cfg.head_hidden, len(TRAITS), cfg.dropout)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        (pooled,), _ = self.fusion(self.proj_s(s), self.proj_d(d))
        return torch.sigmoid(self.head(pooled))


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (1 - (pred - y).abs().mean(dim=0)).numpy()


def run_one(variant: str, n_train: int, seed: int, args) -> dict:
    torch.set_num_threads(1)
    params = load_params(args.params)
    cfg = dataclasses.replace(params.model, **VARIANTS[variant], positions=args.positions)
    train = make_split(n_train, 1000 + seed, args.noise, params.sample.label_noise)
    val = make_split(args.n_val, 2000 + seed, args.noise, params.sample.label_noise)
    test = make_split(args.n_test, 3000 + seed, args.noise, params.sample.label_noise)
    torch.manual_seed(seed)
    model = TokenModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=params.train.lr, weight_decay=params.train.weight_decay)
    steps = args.epochs * -(-n_train // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, params.train.lr, total_steps=steps,
                                                pct_start=params.train.warmup_epochs / args.epochs)
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_test, t0 = -1.0, 0, None, time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in torch.randperm(n_train, generator=gen).split(args.batch):
            loss = (model(train[0][idx], train[1][idx]) - train[2][idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), params.train.grad_clip)
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            val_acc = accuracy(model(val[0], val[1]), val[2]).mean()
            if val_acc > best:
                best, best_epoch = val_acc, epoch
                best_test = accuracy(model(test[0], test[1]), test[2])
    mean_train = train[2].mean(dim=0, keepdim=True).expand_as(test[2])
    base = accuracy(mean_train, test[2])
    return {"variant": variant, "n_train": n_train, "seed": seed, "fusion_params": count_parameters(model.fusion),
            "best_epoch": best_epoch, "seconds": round(time.time() - t0, 1),
            **{f"test_{t}": round(float(a), 4) for t, a in zip(TRAITS, best_test)},
            "test_mean": round(float(best_test.mean()), 4), "baseline_C": round(float(base[1]), 4),
            "baseline_A": round(float(base[3]), 4)}


def _job(job):
    return run_one(*job)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def run_curve(args) -> None:
    path = args.out / "curve.csv"
    done = {(r["variant"], int(r["n_train"]), int(r["seed"])) for r in read_rows(path)}
    # one seed of the whole curve first, so a stopped run leaves a complete curve of fewer seeds
    jobs = [(v, n, s, args) for s in args.seeds for n in args.sizes for v in args.variants if (v, n, s) not in done]
    new = not path.exists()
    with path.open("a", newline="") as f, mp.get_context("spawn").Pool(args.jobs) as pool:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for row in pool.imap_unordered(_job, jobs):
            writer.writerow(row)
            f.flush()
            print(row, flush=True)


def summarise(args) -> None:
    """Markdown table (mean and min-max over seeds of test C and A accuracy) and the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(args.out / "curve.csv")
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    sizes = sorted({int(r["n_train"]) for r in rows})

    def cell(v: str, n: int, key: str) -> tuple[np.ndarray, str]:
        a = np.array([float(r[key]) for r in rows if r["variant"] == v and int(r["n_train"]) == n])
        return a, (f"{a.mean():.3f} ({a.min():.3f}–{a.max():.3f})" if a.size else "—")

    lines = ["| variant | fusion params | " + " | ".join(f"C, n={n}" for n in sizes) + " | "
             + " | ".join(f"A, n={n}" for n in sizes) + " |", "|---" * (2 + 2 * len(sizes)) + "|"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for v in variants:
        nparams = next(r["fusion_params"] for r in rows if r["variant"] == v)
        lines.append(f"| {v} | {int(nparams):,} | " + " | ".join(cell(v, n, key)[1] for key in ("test_C", "test_A")
                                                                   for n in sizes) + " |")
        for ax, key in zip(axes, ("test_C", "test_A")):
            means = [cell(v, n, key)[0].mean() for n in sizes]
            ax.plot(sizes, means, marker="o", label=v)
    for ax, key, title in zip(axes, ("baseline_C", "baseline_A"), ("C: cross-time (variable lag)", "A: same-time")):
        ax.plot(sizes, [np.mean([float(r[key]) for r in rows if int(r["n_train"]) == n]) for n in sizes],
                "k--", label="train mean")
        ax.set(title=title, xlabel="training clips", ylabel="test accuracy (mean over seeds)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "curve.png", dpi=110)
    (args.out / "curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/ablation/token_curve"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000, 3000])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--noise", type=float, default=0.1, help="token noise (sd) on every event feature")
    p.add_argument("--positions", choices=["absolute", "none"], default="absolute",
                   help="model.positions of every variant (none: no learned absolute positions, docs/interaction.md)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        run_curve(args)
    summarise(args)


if __name__ == "__main__":
    main()
