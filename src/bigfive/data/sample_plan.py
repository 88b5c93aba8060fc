"""The sample's plan: every clip's subject, split, latent factors and labels, drawn up front from the seed.

Rendering (:mod:`bigfive.data.sample_render`) is a pure function of a :class:`ClipSpec`, so any worker
count gives the same clips; the label model (:func:`clean_labels`, :func:`noisy_labels`) and the best
accuracy any model can reach on it (:func:`noise_floor`) live here too. See :mod:`bigfive.data.sample`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bigfive import ALL_LABELS, SPLITS
from bigfive.config import SampleConfig
from bigfive.data.faces_source import load_face_sources

YOUTUBE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

# Label model: trait = clip(LABEL_LOW + LABEL_SPAN * factor + N(0, label_noise), 0, 1), factor in [0, 1].
LABEL_LOW, LABEL_SPAN = 0.1, 0.8
INTERVIEW_MIX = {"extraversion": 0.30, "conscientiousness": 0.25, "agreeableness": 0.20, "openness": 0.15,
                 "neuroticism": -0.10}
EVENTS = 3                       # nods and flashes per clip
# Cross-time trait (sample.cross_time, conscientiousness): CROSS_PAIRS cue-motion pairs per clip, one per kind;
# each pair's motion follows or precedes its cue by a lag from CROSS_LAGS sampled steps (docs/sample.md).
CROSS_PAIRS = 2
CROSS_LAGS = (1, 2, 3)
CROSS_SEED = 0xC7055             # its own seed stream: the other traits' draws stay what they are
FACE_HEIGHT = (50.0, 70.0)       # px, face-box height range (nuisance: crops normalise it)


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip and compute its labels; drawn up front from the seed,
    so rendering is a pure function of this record (any worker count gives the same clips)."""

    video_id: str              # "<youtube_id>.<nnn>"
    youtube_id: str
    split: str
    source: int                # index into faces_source.load_face_sources()
    flip: bool
    face_height: float
    center: tuple[float, float]
    background_seed: int
    openness: float            # latent factors, each in [0, 1]
    conscientiousness: float
    extraversion: float
    neuroticism: float
    nod_slots: tuple[int, ...]
    flash_slots: tuple[int, ...]
    sway_phase: float
    noise: tuple[float, ...]   # label noise per ALL_LABELS entry
    size: tuple[int, int] | None = None  # (width, height) when not the config's (sample.other_sizes)
    # sample.cross_time: step of the cue and of the motion of each kind (index = kind); empty when off.
    cue_slots: tuple[int, ...] = ()
    motion_slots: tuple[int, ...] = ()

    @property
    def matches(self) -> int:
        return len(set(self.nod_slots) & set(self.flash_slots))

    @property
    def answered(self) -> int:
        """Cross-time pairs whose motion follows its cue (the motion "answers" it)."""
        return sum(m > c for c, m in zip(self.cue_slots, self.motion_slots))


def n_frames(cfg: SampleConfig) -> int:
    return int(round(cfg.seconds * cfg.fps))


def clip_size(spec: ClipSpec, cfg: SampleConfig) -> tuple[int, int]:
    """(width, height) of one clip's frames."""
    return spec.size or (cfg.width, cfg.height)


def other_size_slots(total: int, sizes: Sequence[Sequence[int]]) -> dict[int, tuple[int, int]]:
    """Clip position -> its size, for ``sample.other_sizes``: evenly spread, one clip per size, no random
    draw (so the rest of the plan is the same with or without them)."""
    return {min(total - 1, int((k + 0.5) * total / len(sizes))): (int(w), int(h))
            for k, (w, h) in enumerate(sizes)}


def segment_centers(n: int, segments: int) -> list[int]:
    """Centre frame of each of ``segments`` equal segments of ``n`` frames (segment-based sampling)."""
    return [min(n - 1, int((k + 0.5) * n / segments)) for k in range(segments)]


# ---------------------------------------------------------------- plan: subjects, factors, labels


def _youtube_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        chars = rng.choice(list(YOUTUBE_ALPHABET), size=11)
        if rng.random() < 0.1:  # real ids may start with '-', which trips naive CLI parsing
            chars[0] = "-"
        yid = "".join(chars)
        if yid not in seen:
            seen.add(yid)
            ids.append(yid)
    return ids


def plan_clips(cfg: SampleConfig) -> list[ClipSpec]:
    """Draw subjects, their clips, the split of each clip and every latent factor from ``cfg.seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5A3B1E]))
    counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    total = sum(counts.values())
    n_sources = len(load_face_sources_meta())

    # Subjects (YouTube ids) with 1-6 clips each; clips are then shuffled across splits, so like
    # in ChaLearn many subjects appear in more than one split.
    clip_counts: list[int] = []
    while sum(clip_counts) < total:
        clip_counts.append(int(rng.integers(1, 7)))
    clip_counts[-1] -= sum(clip_counts) - total
    yids = _youtube_ids(rng, len(clip_counts))
    subjects = []
    for yid in yids:
        subjects.append({
            "youtube_id": yid,
            "source": int(rng.integers(n_sources)),
            "flip": bool(rng.random() < 0.5),
            "face_height": float(rng.uniform(*FACE_HEIGHT)),
            "center": (float(rng.uniform(-8, 8)), float(rng.uniform(-4, 4))),
            "background_seed": int(rng.integers(2**31)),
        })
    clips = [(s, nnn) for s, c in zip(subjects, clip_counts) for nnn in range(c)]
    order = rng.permutation(len(clips))
    splits = [name for name in SPLITS for _ in range(counts[name])]

    odd = other_size_slots(total, cfg.other_sizes) if cfg.other_sizes else {}
    specs = []
    for pos, (split, idx) in enumerate(zip(splits, order)):
        subject, nnn = clips[idx]
        width, height = odd.get(pos, (cfg.width, cfg.height))
        nods = tuple(sorted(int(v) for v in rng.choice(cfg.segments, size=EVENTS, replace=False)))
        matches = int(rng.integers(0, EVENTS + 1))  # uniform over 0..3 coincidences
        others = [k for k in range(cfg.segments) if k not in nods]
        flashes = (list(rng.choice(nods, size=matches, replace=False))
                   + list(rng.choice(others, size=EVENTS - matches, replace=False)))
        face_height = subject["face_height"] * float(rng.uniform(0.95, 1.05))
        cx = width / 2 + subject["center"][0] * width / 160
        cy = height / 2 + subject["center"][1] * height / 120
        # The face scales with the frame's shorter side: the height for landscape (the default sample), the
        # width for a portrait clip, so a face fits either way.
        specs.append(ClipSpec(
            video_id=f"{subject['youtube_id']}.{nnn:03d}", youtube_id=subject["youtube_id"], split=split,
            source=subject["source"], flip=subject["flip"], face_height=face_height * min(width, height) / 120,
            center=(cx, cy), background_seed=subject["background_seed"],
            openness=float(rng.random()), conscientiousness=float(rng.random()),
            extraversion=float(rng.random()), neuroticism=float(rng.random()),
            nod_slots=nods, flash_slots=tuple(sorted(int(v) for v in flashes)),
            sway_phase=float(rng.random()),
            noise=tuple(float(v) for v in rng.normal(0.0, cfg.label_noise, size=len(ALL_LABELS))),
            size=(width, height) if pos in odd else None,
        ))
    return with_cross_time(specs, cfg) if cfg.cross_time else specs


def draw_cross_time(rng: np.random.Generator, segments: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(cue step, motion step) of each kind: lag and order drawn per pair (uniform), then the cue steps
    uniformly among those that keep all events inside the clip and on distinct steps. Lag and order are
    drawn first and kept, so the factor's distribution is exactly binomial(CROSS_PAIRS, 1/2) / CROSS_PAIRS."""
    lags = rng.choice(CROSS_LAGS, size=CROSS_PAIRS)
    signs = np.where(rng.random(CROSS_PAIRS) < 0.5, 1, -1)
    while True:
        cues = rng.integers(segments, size=CROSS_PAIRS)
        motions = cues + signs * lags
        events = [*cues.tolist(), *motions.tolist()]
        if min(events) >= 0 and max(events) < segments and len(set(events)) == len(events):
            return tuple(int(v) for v in cues), tuple(int(v) for v in motions)


def with_cross_time(specs: Sequence[ClipSpec], cfg: SampleConfig) -> list[ClipSpec]:
    """``specs`` with the cross-time events, drawn from their own seed stream: every other field (and so
    every other trait's pixels and labels) is what the plan without them has."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, CROSS_SEED]))
    out = []
    for spec in specs:
        cues, motions = draw_cross_time(rng, cfg.segments)
        out.append(dataclasses.replace(spec, cue_slots=cues, motion_slots=motions))
    return out


@lru_cache(maxsize=1)
def load_face_sources_meta() -> tuple[str, ...]:
    return tuple(s.name for s in load_face_sources())


def clean_labels(spec: ClipSpec) -> dict[str, float]:
    """Noise-free labels: the known function of the latent factors (before noise and clipping)."""
    factors = {
        "openness": spec.openness,
        # cross-time: share of pairs whose motion answers its cue (replaces the green-magenta grading)
        "conscientiousness": spec.answered / CROSS_PAIRS if spec.cue_slots else spec.conscientiousness,
        "extraversion": spec.extraversion,
        "neuroticism": spec.neuroticism,
        "agreeableness": spec.matches / EVENTS,
    }
    mix = sum(w * (factors[t] if w > 0 else 1.0 - factors[t]) for t, w in INTERVIEW_MIX.items())
    factors["interview"] = mix / sum(abs(w) for w in INTERVIEW_MIX.values())
    return {t: LABEL_LOW + LABEL_SPAN * factors[t] for t in ALL_LABELS}


def noisy_labels(spec: ClipSpec) -> dict[str, float]:
    clean = clean_labels(spec)
    return {t: float(min(1.0, max(0.0, clean[t] + spec.noise[i]))) for i, t in enumerate(ALL_LABELS)}


def expected_abs_error(mu: float, sigma: float) -> float:
    """E|clip(mu + e, 0, 1) - mu| for e ~ N(0, sigma^2): the least expected error of any predictor
    that knows mu exactly (mu is the median of the label, so it is the optimal point prediction)."""
    if sigma == 0:
        return 0.0

    def side(b: float) -> float:  # E[min(e, b); e > 0]
        return (sigma / math.sqrt(2 * math.pi) * (1 - math.exp(-b * b / (2 * sigma * sigma)))
                + b * 0.5 * math.erfc(b / (sigma * math.sqrt(2))))

    return side(1.0 - mu) + side(mu)


def noise_floor(specs: Sequence[ClipSpec], sigma: float) -> dict[str, float]:
    """Best reachable accuracy (1 - expected |error|) per label, averaged over ``specs``."""
    out = {}
    for t in ALL_LABELS:
        errs = [expected_abs_error(clean_labels(s)[t], sigma) for s in specs]
        out[t] = 1.0 - float(np.mean(errs))
    return out
