"""Why is the interaction trait learned late? Per-epoch linear probes on the stream tokens.

On the sample, agreeableness counts the sampled steps t where a brightness flash (seen by the
static stream) coincides with a nod (seen by the dynamic stream). A per-time-step fusion can
only read it if static token s_t still encodes flash_t and dynamic token d_t still encodes
nod_t. Both events are nuisances for the traits each stream learns first (a flash washes out the
colour grading of O/C; a nod is vertical motion on top of N's vertical tremor), so a stream may
learn to *suppress* the very cue the interaction needs: feature competition.

This script trains a model with the project's own ``fit`` and, after every epoch, fits logistic
probes (train clips -> val clips, balanced accuracy) for
  flash_t from s_t, nod_t from d_t            (does each stream keep its cue?)
  nod_t from s_t, flash_t from d_t            (controls: should stay near 0.5)
  flash_t AND nod_t from the fused token x_t  (has the fusion formed the product?)
and records validation agreeableness. The generator knows the event times (``plan_clips``).

    python pipelines/ablation/interaction_probe.py --epochs 16 --seed 0 --out results/ablation/probes
    python pipelines/ablation/interaction_probe.py --set model.fusion=framewise --out /tmp/p

Writes ``probes.csv`` (one row per epoch) and ``probes.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from bigfive.config import load_params, replace
from bigfive.data.sample_plan import plan_clips
from bigfive.training import fit
from bigfive.training.callbacks import Callback
from bigfive.training.data import from_features_dir

log = logging.getLogger("bigfive.probe")


def event_table(params, clip_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) bool flash and nod indicators per sampled step, from the generator's own plan."""
    frames = params.preprocess.frames
    if params.sample.segments != frames:
        raise SystemExit(f"sample.segments={params.sample.segments} != preprocess.frames={frames}: "
                         "events are not one per sampled step")
    specs = {s.video_id: s for s in plan_clips(params.sample)}
    flash = np.zeros((len(clip_ids), frames), bool)
    nod = np.zeros_like(flash)
    for i, cid in enumerate(clip_ids):
        spec = specs[cid.removesuffix(".mp4")]
        flash[i, list(spec.flash_slots)] = True
        nod[i, list(spec.nod_slots)] = True
    return flash, nod


@torch.inference_mode()
def tokens(model, arrays, batch: int = 64) -> dict[str, np.ndarray]:
    """Stream tokens s_t, d_t and the fused static-side token x_t (after the first block) per clip."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {"s": [], "d": [], "x": []}
    for i in range(0, len(arrays.clip_ids), batch):
        st = torch.as_tensor(np.asarray(arrays.static[i:i + batch]))
        dy = torch.as_tensor(np.asarray(arrays.dynamic[i:i + batch]))
        s, d = model.static(st), model.dynamic(dy)
        out["s"].append(s.numpy())
        out["d"].append(d.numpy())
        fusion = model.fusion
        if hasattr(fusion, "blocks") and "static_to_dynamic" in fusion.blocks:
            x, _ = fusion.blocks["static_to_dynamic"][0](s + fusion.pos_static, d + fusion.pos_dynamic)
            out["x"].append(x.numpy())
    model.train()
    return {k: np.concatenate(v) for k, v in out.items() if v}


def probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Balanced accuracy of a logistic probe of per-step tokens (N, T, D) for per-step labels (N, T)."""
    def flat(a):
        return a.reshape(-1, a.shape[-1]) if a.ndim == 3 else a.reshape(-1)

    mean, std = flat(train_x).mean(0), flat(train_x).std(0) + 1e-6
    clf = LogisticRegression(max_iter=400, class_weight="balanced", C=1.0)
    clf.fit((flat(train_x) - mean) / std, flat(train_y))
    return float(balanced_accuracy_score(flat(val_y), clf.predict((flat(val_x) - mean) / std)))


class ProbeCallback(Callback):
    def __init__(self, data, events, rows: list[dict], stop_after: int | None = None):
        self.data, self.events, self.rows, self.stop_after = data, events, rows, stop_after

    def measure(self, model, epoch: int, metrics: dict) -> None:
        tr, va = tokens(model, self.data.train), tokens(model, self.data.val)
        (f_tr, n_tr), (f_va, n_va) = self.events
        row = {"epoch": epoch, "val_acc_agreeableness": metrics.get("val_acc_agreeableness", np.nan),
               "val_mean_accuracy": metrics.get("val_mean_accuracy", np.nan),
               "flash_from_static": probe(tr["s"], f_tr, va["s"], f_va),
               "nod_from_dynamic": probe(tr["d"], n_tr, va["d"], n_va),
               "nod_from_static": probe(tr["s"], n_tr, va["s"], n_va),
               "flash_from_dynamic": probe(tr["d"], f_tr, va["d"], f_va)}
        if "x" in tr:
            row["coincidence_from_fused"] = probe(tr["x"], f_tr & n_tr, va["x"], f_va & n_va)
        self.rows.append(row)
        log.info("probe %s", {k: round(v, 3) for k, v in row.items()})

    def on_train_begin(self, state) -> None:
        self.measure(state.model, 0, {})

    def on_epoch_end(self, state) -> None:
        self.measure(state.model, state.epoch, state.metrics)
        if self.stop_after and state.epoch >= self.stop_after:  # observe the start of a longer schedule only
            state.stop, state.stop_reason = True, f"--stop-after {self.stop_after}"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for key, style in (("flash_from_static", "-o"), ("nod_from_dynamic", "-s"), ("coincidence_from_fused", "-^"),
                       ("nod_from_static", ":"), ("flash_from_dynamic", ":")):
        if key in rows[0]:
            ax[0].plot(epochs, [r[key] for r in rows], style, ms=3, label=key.replace("_", " "))
    ax[0].axhline(0.5, color="grey", lw=0.8)
    ax[0].set(xlabel="epoch", ylabel="probe balanced accuracy (val clips)", ylim=(0.4, 1.02),
              title="Is each event still decodable from its token?")
    ax[0].legend(fontsize=8, frameon=False)
    ax[1].plot(epochs[1:], [r["val_acc_agreeableness"] for r in rows[1:]], "-o", ms=3, color="C3")
    ax[1].axhline(0.90, color="grey", ls="--", lw=0.8)
    ax[1].set(xlabel="epoch", ylabel="validation accuracy", title="agreeableness (the interaction trait)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop after this epoch (the learning-rate schedule is still that of --epochs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override (YAML value)")
    ap.add_argument("--out", type=Path, default=Path("results/ablation/probes"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    params = replace(load_params(args.params), {"train.epochs": args.epochs, "train.seed": args.seed,
                                                "tracking.enabled": False, **overrides})
    data = from_features_dir(params.preprocess.features_dir, {})
    events = (event_table(params, data.train.clip_ids), event_table(params, data.val.clip_ids))
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as models:  # checkpoints are not the point here
        fit(params, data=data, output_dir=models, register=False,
            callbacks=[ProbeCallback(data, events, rows, args.stop_after)])
    import pandas as pd

    pd.DataFrame(rows).to_csv(args.out / "probes.csv", index=False, float_format="%.4f")
    m = params.model
    plot(rows, args.out / "probes.png", f"fusion={m.fusion} direction={m.direction} seed={args.seed}, "
                                        f"{args.epochs}-epoch schedule")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
