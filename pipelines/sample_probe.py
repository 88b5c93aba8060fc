"""Hand probes of the sample's traits on the real rendered clips (docs/sample.md, "Hand probes").

Generates a sample (``bigfive.data.sample.generate``: mp4 in the ChaLearn archives), decodes every clip,
cuts square crops around the generator's own face track (+-1.5 px jitter, like a detector; side = face
height x (1 + 2 preprocess.margin), resized to preprocess.crop_size), computes DIS flow (preprocess.flow's
preset) between each sampled frame's crop and its successor's crop (same box, as the flow stage), and
summarises every sampled step:

- static: mean R, G, B of the crop; cue scores (mouth region darker than the mid-face, forehead brighter);
- flow: mean dx, dy; mean and median |flow|; divergence and curl about the crop centre.

Gradient-boosted trees (train -> val + test, accuracy = 1 - MAE as ChaLearn) then read the labels from
views of these summaries: each stream pooled order-free, both pooled, each stream in time order, and for
the cross-time trait (``sample.cross_time``) the same-time and each fixed-offset pairing, a window over
all offsets -3..+3, and an *observable* probe: each cue kind's step is where its score peaks, its partner
is the offset (+-1..3) where the same kind's zoom score peaks; never the generator's own pairing. Exact
Bayes accuracies (noise-free labels) of the ideal versions of these views come from enumerating the plan.

    nice python pipelines/sample_probe.py --n-train 1500 --n-val 250 --n-test 250 --out results/sample_probe

Writes ``probes.csv`` (probe, trait, accuracy) and ``probes.json`` (config, costs, detection rates,
Bayes references) into ``--out``. ``--pipeline-outputs`` instead checks the observable detection on
the real faces and flow stages' outputs (``bigfive raw``, ``faces``, ``flow`` run with ``--params``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from bigfive import TRAITS
from bigfive.config import load_params
from bigfive.data import sample as S
from bigfive.data.faces_source import read_video_rgb
from bigfive.data.sample_plan import CROSS_LAGS, CROSS_PAIRS, ClipSpec, noisy_labels, plan_clips, segment_centers
from bigfive.data.sample_render import CUE_SHAPES, face_track

OFFSETS = range(-max(CROSS_LAGS), max(CROSS_LAGS) + 1)
STATIC = ("r", "g", "b", "cue0", "cue1")
FLOW = ("dx", "dy", "mag", "med", "div", "curl")


# ---------------------------------------------------------------- per-step summaries from the video


def decode(data: bytes, tmp: Path) -> np.ndarray:
    path = tmp / "clip.mp4"
    path.write_bytes(data)
    return np.stack(read_video_rgb(path))


def crop(frame: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Square crop of ``side`` px centred on (cx, cy), resized to ``size`` (border replicated)."""
    s = size / side
    m = np.array([[s, 0, size / 2 - cx * s], [0, s, size / 2 - cy * s]])
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def region_rows(size: int, side_fh: float, dy: float, half: float) -> slice:
    """Crop rows of a horizontal band ``dy`` +- ``half`` face heights from the centre."""
    px = size / side_fh
    return slice(int(round(size / 2 + (dy - half) * px)), int(round(size / 2 + (dy + half) * px)) + 1)


def static_summary(rgb: np.ndarray, side_fh: float) -> list[float]:
    """Mean colour and the two cue scores (a band darker / brighter than the mid-face)."""
    size = rgb.shape[0]
    grey = rgb.astype(np.float32).mean(axis=2)
    cols = slice(size // 3, size - size // 3)
    mid = grey[region_rows(size, side_fh, 0.0, 0.08), cols].mean()
    (_, dy0), (_, ay0), *_ = CUE_SHAPES[0]
    (_, dy1), (_, ay1), *_ = CUE_SHAPES[1]
    mouth = grey[region_rows(size, side_fh, dy0, ay0 / 2), cols].mean()
    forehead = grey[region_rows(size, side_fh, dy1, ay1 / 2), cols].mean()
    return [*rgb.reshape(-1, 3).mean(0).tolist(), float(mid - mouth), float(forehead - mid)]


def flow_summary(flow: np.ndarray) -> list[float]:
    """Mean dx, dy, mean and median |flow|, divergence and curl (radial / tangential flow per unit radius)."""
    size = flow.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    r2 = np.maximum(xx * xx + yy * yy, 1.0)
    u, v = flow[..., 0] - flow[..., 0].mean(), flow[..., 1] - flow[..., 1].mean()  # translation removed
    div = float(((u * xx + v * yy) / r2).mean())
    curl = float(((v * xx - u * yy) / r2).mean())
    mag = np.hypot(flow[..., 0], flow[..., 1])
    return [float(flow[..., 0].mean()), float(flow[..., 1].mean()), float(mag.mean()), float(np.median(mag)),
            div, curl]


def clip_summaries(frames: np.ndarray, spec: ClipSpec, cfg, pre, dis, rng) -> tuple[np.ndarray, np.ndarray]:
    """(T, len(STATIC)) and (T, len(FLOW)) summaries of one clip's sampled steps."""
    xs, ys = face_track(spec, cfg)
    side_fh = 1 + 2 * pre.margin  # crop side in face heights (MTCNN box ~ face height)
    side = spec.face_height * side_fh
    static, flow = [], []
    for c in segment_centers(len(frames), cfg.segments):
        cx, cy = xs[c] + rng.uniform(-1.5, 1.5), ys[c] + rng.uniform(-1.5, 1.5)
        a = crop(frames[c], cx, cy, side, pre.crop_size)
        b = crop(frames[min(c + 1, len(frames) - 1)], cx, cy, side, pre.crop_size)
        static.append(static_summary(a, side_fh))
        grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b)]
        flow.append(flow_summary(dis.calc(grey[0], grey[1], None)))
    return np.array(static, np.float32), np.array(flow, np.float32)


def read_split(folder: Path, split: str) -> dict[str, bytes]:
    clips = {}
    with zipfile.ZipFile(folder / S.ARCHIVES[split]) as outer:
        for name in outer.namelist():
            with zipfile.ZipFile(io.BytesIO(outer.read(name))) as inner:
                clips.update({n.removesuffix(".mp4"): inner.read(n) for n in inner.namelist()})
    return clips


# ---------------------------------------------------------------- views and probes


def pooled(x: np.ndarray) -> np.ndarray:
    """Order-free pooling over steps: mean, std, min, max of every summary. x: (N, T, F)."""
    return np.concatenate([x.mean(1), x.std(1), x.min(1), x.max(1)], axis=1)


def cue_motion_scores(st: np.ndarray, fl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, kinds) cue scores and zoom scores (kind 0: divergence, kind 1: its negative)."""
    cue = st[..., [STATIC.index("cue0"), STATIC.index("cue1")]]
    div = fl[..., FLOW.index("div")]
    return cue, np.stack([div, -div], axis=-1)


def offset_view(st: np.ndarray, fl: np.ndarray, d: int) -> np.ndarray:
    """What a fusion of step t with step t + d sees, pooled over t: both streams pooled, and for every
    (cue kind, zoom kind) the sum and max over t of cue(t) x zoom(t + d)."""
    cue, mot = cue_motion_scores(st, fl)
    t = np.arange(st.shape[1])
    ok = (t + d >= 0) & (t + d < st.shape[1])
    a, b = cue[:, t[ok]], mot[:, t[ok] + d]
    prod = np.einsum("ntk,ntj->nkj", np.maximum(a, 0), np.maximum(b, 0)).reshape(len(st), -1)
    peak = (np.maximum(a, 0)[..., :, None] * np.maximum(b, 0)[..., None, :]).max(1).reshape(len(st), -1)
    return np.concatenate([pooled(st), pooled(fl), prod, peak], axis=1)


def observable_pairs(st: np.ndarray, fl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per kind: the step where its cue score peaks and the signed offset (+-1..max lag) to where the same
    kind's zoom score peaks around it. Only what the video shows; (N, kinds) steps and offsets."""
    cue, mot = cue_motion_scores(st, fl)
    steps = cue.argmax(1)
    offsets = np.zeros_like(steps)
    cand = [d for d in OFFSETS if d != 0]
    for n in range(len(st)):
        for k in range(cue.shape[2]):
            c = steps[n, k]
            valid = [d for d in cand if 0 <= c + d < st.shape[1]]
            offsets[n, k] = max(valid, key=lambda d: mot[n, c + d, k])
    return steps, offsets


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, seed: int) -> np.ndarray:
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=seed)
    return np.clip(model.fit(x_train, y_train).predict(x_eval), 0, 1)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return round(1.0 - float(np.mean(np.abs(pred - y))), 4)


def trait_probes(st: np.ndarray, fl: np.ndarray) -> dict[str, np.ndarray]:
    """Views every trait is probed with: each stream pooled order-free, both, each stream in time order."""
    n = len(st)
    return {"static pooled": pooled(st), "flow pooled": pooled(fl),
            "both pooled": np.concatenate([pooled(st), pooled(fl)], axis=1),
            "static in time order": st.reshape(n, -1), "flow in time order": fl.reshape(n, -1)}


def cross_time_probes(st: np.ndarray, fl: np.ndarray) -> dict[str, np.ndarray]:
    """Views of the cross-time trait: same-time (d = 0), each fixed offset, and the window of all offsets."""
    views = {f"offset {d:+d}" if d else "same-time (offset 0)": offset_view(st, fl, d) for d in OFFSETS}
    for w in (2, 3):  # 2: the C3D flow token's temporal reach (issue 23); 3: the whole lag range
        views[f"window, offsets -{w}..+{w}"] = np.concatenate([offset_view(st, fl, d) for d in range(-w, w + 1)], 1)
    steps, offsets = observable_pairs(st, fl)
    views["observable: partner offset per cue kind"] = offsets.astype(np.float32)
    return views


def agreeableness_view(st: np.ndarray, fl: np.ndarray) -> np.ndarray:
    """Brightness x downward flow at the same step (the docs' same-frame agreeableness probe)."""
    bright = st[..., :3].mean(-1)
    flash = bright - np.median(bright, axis=1, keepdims=True)
    prod = np.maximum(flash, 0) * np.maximum(fl[..., FLOW.index("dy")], 0)
    return np.stack([prod.sum(1), np.sort(prod, axis=1)[:, -3:].sum(1)], axis=1)


def run_probes(st: np.ndarray, fl: np.ndarray, y: dict[str, np.ndarray], train: np.ndarray, seed: int,
               cross_time: bool) -> list[dict]:
    rows = []
    ev = ~train
    for trait in TRAITS:
        mean = float(y[trait][train].mean())
        rows.append({"probe": "train-mean baseline", "trait": trait,
                     "accuracy": accuracy(np.full(ev.sum(), mean), y[trait][ev])})
        for name, x in trait_probes(st, fl).items():
            rows.append({"probe": name, "trait": trait,
                         "accuracy": accuracy(fit_predict(x[train], y[trait][train], x[ev], seed), y[trait][ev])})
    x = agreeableness_view(st, fl)
    rows.append({"probe": "brightness x downward flow, same step", "trait": "agreeableness",
                 "accuracy": accuracy(fit_predict(x[train], y["agreeableness"][train], x[ev], seed),
                                      y["agreeableness"][ev])})
    if cross_time:
        c = y["conscientiousness"]
        for name, x in cross_time_probes(st, fl).items():
            rows.append({"probe": name, "trait": "conscientiousness",
                         "accuracy": accuracy(fit_predict(x[train], c[train], x[ev], seed), c[ev])})
        _, offsets = observable_pairs(st[ev], fl[ev])
        rule = 0.1 + 0.8 * (offsets > 0).mean(1)  # no training: the share of cues whose partner follows
        rows.append({"probe": "observable rule (no fit): share of partners after their cue",
                     "trait": "conscientiousness", "accuracy": accuracy(rule, c[ev])})
    return rows


# ---------------------------------------------------------------- exact Bayes references of ideal views


def enumerate_plan(segments: int, lag_set: tuple[int, ...] = CROSS_LAGS) -> list[tuple[float, tuple[int, ...], float]]:
    """Every (probability, (cue0, zoom0, cue1, zoom1) steps, factor) of ``draw_cross_time`` (with ``lag_set``)."""
    import itertools

    rows = []
    for lags in itertools.product(lag_set, repeat=CROSS_PAIRS):
        for signs in itertools.product((1, -1), repeat=CROSS_PAIRS):
            valid = []
            for cues in itertools.product(range(segments), repeat=CROSS_PAIRS):
                ev = tuple(v for c, s, lag in zip(cues, signs, lags) for v in (c, c + s * lag))
                if min(ev) >= 0 and max(ev) < segments and len(set(ev)) == len(ev):
                    valid.append(ev)
            p = 1.0 / (len(lag_set) ** CROSS_PAIRS * 2 ** CROSS_PAIRS * len(valid))
            rows.extend((p, ev, sum(s > 0 for s in signs) / CROSS_PAIRS) for ev in valid)
    return rows


def bayes_accuracy(rows, view) -> float:
    """1 - E|label - median of the label's posterior given ``view(events)``| for noise-free labels."""
    post: dict = {}
    for p, ev, f in rows:
        post.setdefault(view(ev), {}).setdefault(f, 0.0)
        post[view(ev)][f] += p
    err = 0.0
    for dist in post.values():
        fs = sorted(dist)
        cum = np.cumsum([dist[f] for f in fs]) / sum(dist.values())
        med = fs[int(np.searchsorted(cum, 0.5))]
        err += sum(w * abs(f - med) for f, w in dist.items())
    return round(1.0 - 0.8 * err, 4)


def _coincide(ev: tuple[int, ...], ds) -> tuple[bool, ...]:
    """Kind-matched cue-zoom coincidence at each offset in ``ds`` (what a fusion at those offsets can see)."""
    return tuple(ev[2 * k + 1] - ev[2 * k] == d for d in ds for k in range(CROSS_PAIRS))


def bayes_references(segments: int, lag_set: tuple[int, ...] = CROSS_LAGS) -> dict[str, float]:
    rows = enumerate_plan(segments, lag_set)
    out = {"pooled (no timing)": bayes_accuracy(rows, lambda ev: 0)}
    out |= {f"offset {d:+d}": bayes_accuracy(rows, lambda ev, d=d: _coincide(ev, [d])) for d in OFFSETS}
    out |= {f"window -{w}..+{w}": bayes_accuracy(rows, lambda ev, w=w: _coincide(ev, range(-w, w + 1)))
            for w in (1, 2, 3)}
    out["zoom steps and kinds only (one stream, in time order)"] = bayes_accuracy(rows, lambda ev: ev[1::2])
    out["cue steps and kinds only (one stream, in time order)"] = bayes_accuracy(rows, lambda ev: ev[0::2])
    out["all events"] = bayes_accuracy(rows, lambda ev: ev)
    return out


def lag_set_tradeoff(segments: int) -> dict[str, dict[str, float]]:
    """Other lag sets than CROSS_LAGS: a wider one hides the pairs from short windows but lets one stream's
    event positions tell more (on a line of ``segments`` steps, the later end of a pair is later on average)."""
    out = {}
    for lags in ((1, 2, 3), (1, 2, 3, 4), (2, 3, 4), (1, 2, 3, 4, 5), (3, 4, 5)):
        ref = bayes_references(segments, lags)
        out[str(list(lags))] = {k: ref[k] for k in ("window -1..+1", "window -2..+2", "window -3..+3",
                                                    "zoom steps and kinds only (one stream, in time order)")}
        out[str(list(lags))]["best fixed offset"] = max(bayes_accuracy(
            enumerate_plan(segments, lags), lambda ev, d=d: _coincide(ev, [d])) for d in range(-5, 6) if d)
    return out


# ---------------------------------------------------------------- checks against the generator's truth


def detection_rates(st: np.ndarray, fl: np.ndarray, specs: list[ClipSpec]) -> dict[str, float]:
    """How often the observable probe's cue steps and partner offsets equal the generator's (a diagnostic)."""
    steps, offsets = observable_pairs(st, fl)
    cues = np.array([s.cue_slots for s in specs])
    lags = np.array([s.motion_slots for s in specs]) - cues
    return {"cue_step": float((steps == cues).mean()), "partner_offset": float((offsets == lags).mean()),
            "both_pairs_right": float(((steps == cues) & (offsets == lags)).all(1).mean())}


def mtcnn_check(clips: dict[str, bytes], specs: dict[str, ClipSpec], cfg, count: int, tmp: Path) -> dict:
    """Faces MTCNN finds on frames c-1..c+2 of every cue and zoom event of ``count`` clips."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    one = total = 0
    heights = []
    for vid in list(clips)[:count]:
        frames = decode(clips[vid], tmp)
        centers = segment_centers(len(frames), cfg.segments)
        spec = specs[vid]
        picked = [frames[centers[k] + o] for k in (*spec.cue_slots, *spec.motion_slots) for o in (-1, 0, 1, 2)
                  if centers[k] + o < len(frames)]
        for boxes in mtcnn.detect(picked)[0]:
            total += 1
            if boxes is not None and len(boxes) == 1:
                one += 1
                heights.append(float(boxes[0][3] - boxes[0][1]))
    return {"frames": total, "exactly_one_face": one,
            "box_height_px": [round(float(np.min(heights)), 1), round(float(np.median(heights)), 1),
                              round(float(np.max(heights)), 1)] if heights else []}


def pipeline_check(params) -> dict:
    """The observable detection on the real faces and flow stages' outputs (MTCNN boxes, smoothed, the
    stored uint8 flow) of a sample generated with ``params`` (sample.cross_time on), instead of crops
    around the generator's face track: how much of the proof survives the real crops."""
    from bigfive.preprocess.flow import dequantize

    pre = params.preprocess
    specs = {s.video_id: s for s in plan_clips(params.sample)}
    st, fl, ordered = [], [], []
    for path in sorted(Path(pre.faces_dir).glob("*/*.npz")):
        record = np.load(path)
        if "crops" not in record.files:
            continue  # excluded clip
        flow = dequantize(np.load(Path(pre.flow_dir) / path.parent.name / f"{path.stem}.npy"), pre.flow.bound)
        st.append([static_summary(c, 1 + 2 * pre.margin) for c in record["crops"]])
        fl.append([flow_summary(np.moveaxis(x[:2], 0, -1)) for x in flow])
        ordered.append(specs[path.stem])
    st, fl = np.array(st, np.float32), np.array(fl, np.float32)
    _, offsets = observable_pairs(st, fl)
    y = np.array([noisy_labels(s)["conscientiousness"] for s in ordered])
    rule = accuracy(0.1 + 0.8 * (offsets > 0).mean(1), y)  # the observable rule, no fitting
    return {"clips": len(ordered), **detection_rates(st, fl, ordered), "observable_rule_accuracy": rule,
            "train_mean_baseline_all_clips": accuracy(np.full(len(y), y.mean()), y)}


# ---------------------------------------------------------------- entry point


def summarise(folder: Path, specs: dict[str, ClipSpec], cfg, pre, seed: int) -> tuple:
    """Per-step summaries of every clip, in train, val, test order; returns (ids, static, flow, clips)."""
    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    dis = cv2.DISOpticalFlow_create(presets[pre.flow.dis_preset])
    rng = np.random.default_rng(seed)
    ids, st, fl, all_clips = [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "val", "test"):
            clips = read_split(folder, split)
            all_clips.update(clips)
            for vid, data in clips.items():
                a, b = clip_summaries(decode(data, Path(tmp)), specs[vid], cfg, pre, dis, rng)
                ids.append(vid)
                st.append(a)
                fl.append(b)
    return ids, np.stack(st), np.stack(fl), all_clips


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-val", type=int, default=250)
    ap.add_argument("--n-test", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cross-time", action="store_true", help="probe the sample as it is without the trait")
    ap.add_argument("--mtcnn-clips", type=int, default=20, help="clips whose event frames MTCNN checks (0: none)")
    ap.add_argument("--speed-clips", type=int, default=300, help="clips generated without the trait (speed reference)")
    ap.add_argument("--out", default="results/sample_probe")
    ap.add_argument("--pipeline-outputs", action="store_true",
                    help="only check the observable detection on the faces and flow stages' outputs of --params")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    params = load_params(args.params)
    if args.pipeline_outputs:
        print(json.dumps(pipeline_check(params)))
        return 0
    cfg = S.sample_config(params.sample, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                          seed=args.seed, cross_time=not args.no_cross_time)
    specs = {s.video_id: s for s in plan_clips(cfg)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        meta = S.generate(cfg, Path(tmp) / "sample", progress=False)  # one process: its CPU time is the cost
        t1, c1 = time.perf_counter(), time.process_time()
        off = S.sample_config(cfg, n_train=args.speed_clips, n_val=1, n_test=1, cross_time=False)
        S.generate(off, Path(tmp) / "off", progress=False)  # reference: the same generator without the trait
        c_off = time.process_time() - c1
        ids, st, fl, clips = summarise(Path(tmp) / "sample", specs, cfg, params.preprocess, args.seed)
        t2 = time.perf_counter()
        mtcnn = mtcnn_check(clips, specs, cfg, args.mtcnn_clips, Path(tmp)) if args.mtcnn_clips else {}
    t3 = time.perf_counter()
    ordered = [specs[v] for v in ids]
    y = {t: np.array([noisy_labels(s)[t] for s in ordered]) for t in TRAITS}
    train = np.array([s.split == "train" for s in ordered])
    with threadpool_limits(1):  # the machine is shared; one thread per fit
        rows = run_probes(st, fl, y, train, args.seed, cfg.cross_time)
    t4 = time.perf_counter()
    report = {
        "command": "python pipelines/sample_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {"n_train": cfg.n_train, "n_val": cfg.n_val, "n_test": cfg.n_test, "seed": cfg.seed,
                   "cross_time": cfg.cross_time, "crop_size": params.preprocess.crop_size,
                   "margin": params.preprocess.margin, "dis_preset": params.preprocess.flow.dis_preset},
        "seconds": {"generate": round(t1 - t0, 1), "summarise": round(t2 - t1, 1), "mtcnn": round(t3 - t2, 1),
                    "probes": round(t4 - t3, 1)},
        "generate_cpu_s": round(c1 - c0, 1),
        "generate_clips_per_cpu_s": round(len(ids) / (c1 - c0), 1),
        "generate_clips_per_cpu_s_trait_off": round((args.speed_clips + 2) / c_off, 1),
        "noise_floor": meta["noise_floor"], "train_mean_baseline": meta["train_mean_baseline"],
        "mtcnn_on_event_frames": mtcnn,
        "probes": {f"{r['probe']} | {r['trait']}": r["accuracy"] for r in rows},
    }
    if cfg.cross_time:
        report["observable_detection_vs_generator"] = detection_rates(st, fl, ordered)
        report["bayes_noise_free"] = bayes_references(cfg.segments)
        report["bayes_noise_free_other_lag_sets"] = lag_set_tradeoff(cfg.segments)
    with (out / "probes.csv").open("w") as f:
        f.write("probe,trait,accuracy\n" + "".join(f"{r['probe']},{r['trait']},{r['accuracy']}\n" for r in rows))
    (out / "probes.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
