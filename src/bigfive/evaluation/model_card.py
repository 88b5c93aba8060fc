"""The model card: what a bigfive model is for, what it was trained on, how it scores and where it
falls short, written by the ``evaluate`` stage from the values it has just measured.

It goes to ``results/model_card.md``, to the training run (artifact ``evaluation/model_card.md``) and
into the registered model version's description, so the MLflow registry page of every registered
version shows it. Every number comes from the evaluation (metrics, baseline, per-group metrics), the
sample's metadata (noise floor), the features record (split sizes, face-quality statistics) or the
training run (features hash); only the published ChaLearn references are quoted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigfive.evaluation.result import primary_split

log = logging.getLogger("bigfive.evaluate")

# MLflow's SQL registry keeps a version description in a VARCHAR(5000) column (PostgreSQL enforces it).
DESCRIPTION_LIMIT = 5000
# Groups with fewer test clips than this are flagged: their accuracy moves by more than the gaps measured.
SMALL_GROUP = 30

# Published results on the ChaLearn First Impressions V2 test set: mean accuracy (1 - MAE) over the five
# traits, as the works named report them (the 2016 entries: Ponce-López et al., "ChaLearn LAP 2016: First
# Round Challenge on First Impressions", ECCV 2016 Workshops). Shown beside the model's own figures when it
# was trained on ChaLearn.
PUBLISHED = (
    ("2016 challenge winner, NJU-LAMDA (audio + visual)", 0.9130),
    ("2016 third place, DCC", 0.9109),
    ("face + scene, visual only (Gürpınar et al. 2016)", 0.9094),
    ("face-only ResNet", 0.8972),
    ("OCEAN-AI 2024, visual only", 0.9152),
)

INTENDED_USE = """\
## Intended use

- Research on *apparent* (perceived) personality: how ChaLearn-style annotators would rate the person in
  a short talking-head clip on the Big Five traits, on a 0-1 scale.
- A readable, reproducible baseline to compare fusion designs against (two-stream face + optical flow).

## Out of scope

- Measuring anyone's actual personality: the labels are first impressions of strangers, not
  questionnaires answered by the people filmed.
- Any decision about a person: hiring, admission, credit, insurance, policing, dating, diagnosis.
- People or settings unlike the training clips (other cultures and languages, children, group scenes,
  covered or profile faces) without a new evaluation on such data.
"""


@dataclass
class CardFacts:
    """Everything the card states; built by :func:`card_facts` from the evaluation's outputs."""

    model: str  # "bigfive-xattn version 3" or the checkpoint path
    run_id: str | None
    traits: list[str]
    source: str  # data.source: sample | chalearn
    split_scheme: str  # data.split
    counts: dict[str, int]  # clips per split in the features
    features_hash: str
    features_hash_source: str
    preprocess: dict[str, Any]  # features meta.json
    primary: str  # the split whose metrics are reported (test unless not evaluated)
    metrics: dict[str, Any]  # that split's metrics (summarize_with_baseline + CIs + groups)
    noise_floor: float | None = None
    shared_subjects: int | None = None  # people (YouTube ids) found in more than one split
    val_mean_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def card_facts(params: Any, results: dict[str, Any], *, noise_floor: float | None, meta: dict[str, Any] | None,
               run_info: dict[str, Any], tags: dict[str, str], checkpoint: str | Path) -> CardFacts:
    """Collect the card's facts from what ``bigfive evaluate`` has at hand (``results``: split -> EvalResult)."""
    primary = primary_split(results)
    res = results[primary]
    meta = meta or {}
    counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
    name, version = run_info.get("registered_model"), run_info.get("model_version")
    model = f"{name} version {version}" if name and version else str(checkpoint)
    fp = tags.get("features_hash")
    fp_source = tags.get("features_hash_source", "") if fp else ""
    if not fp:
        from bigfive.training.tracking import dvc_lock_hash

        fp = dvc_lock_hash(params.preprocess.features_dir)
        fp_source = "dvc.lock (no training run to read it from)" if fp else "not recorded"
    val = results.get("val")
    return CardFacts(
        model=model, run_id=run_info.get("run_id"), traits=list(res.traits), source=params.data.source,
        split_scheme=params.data.split, counts={str(k): int(v) for k, v in counts.items()} or
        {s: len(r.clip_ids) for s, r in results.items()}, features_hash=fp or "unknown",
        features_hash_source=fp_source, preprocess=meta, primary=primary, metrics=res.metrics,
        noise_floor=noise_floor, shared_subjects=_shared_subjects(Path(params.data.raw_dir)),
        val_mean_accuracy=val.metrics["mean_accuracy"] if val is not None else None)


def _shared_subjects(raw_dir: Path) -> int | None:
    """How many people appear in more than one split, from the raw stage's ingest report."""
    path = raw_dir / "ingest_report.json"
    try:
        value = json.loads(path.read_text()).get("subjects_in_several_splits")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


# ------------------------------------------------------------------------------------------- render


def render(f: CardFacts) -> str:
    """The card as Markdown (what MLflow's registry page renders)."""
    parts = [_header(f), INTENDED_USE, _training_data(f), _metrics(f), _groups(f), _limitations(f)]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _header(f: CardFacts) -> str:
    run = f" (MLflow run `{f.run_id}`)" if f.run_id else ""
    return (f"# Model card: {f.model}\n\n"
            f"Predicts **apparent** Big Five personality ({', '.join(f.traits)}) from a short talking-head clip: "
            "the scores ChaLearn First Impressions annotators would give, **not a measurement of the person**. "
            f"Generated by `bigfive evaluate` from measured values{run}.\n")


def _training_data(f: CardFacts) -> str:
    what = ("the embedded **synthetic sample** (`bigfive sample`): real face imagery animated with colour "
            "grading, sway, tremor and flashes that determine the labels by a known formula"
            if f.source == "sample" else
            "**ChaLearn First Impressions V2** (YouTube vlog clips, labels from pairwise annotator comparisons)")
    sizes = " / ".join(f"{f.counts[s]} {s}" for s in ("train", "val", "test") if s in f.counts)
    p = f.preprocess
    flow = p.get("flow") if isinstance(p.get("flow"), dict) else {}
    lines = ["## Training data", "",
             f"- Source: {what}.",
             f"- Clips: {sizes} ({f.split_scheme} split).",
             f"- Features hash: `{f.features_hash}` ({f.features_hash_source or 'source unknown'}).",
             f"- Preprocessing: T = {p.get('frames', '?')} frames, {p.get('crop_size', '?')} px face crops (MTCNN), "
             f"{str(flow.get('method', '?')).upper()} optical flow."]
    return "\n".join(lines) + "\n"


def _num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "n/a"


def _metrics(f: CardFacts) -> str:
    m = f.metrics
    rows = ["| trait | accuracy (1 − MAE) | train-mean baseline | Pearson r | CCC |", "|---|---|---|---|---|"]
    for trait in f.traits:
        t = m["traits"][trait]
        rows.append(f"| {trait} | {_num(t['accuracy'])} | {_num(t.get('baseline_accuracy'))} | {_num(t['pcc'])} "
                    f"| {_num(t['ccc'])} |")
    rows.append(f"| **mean** | **{_num(m['mean_accuracy'])}** | {_num(m.get('baseline_mean_accuracy'))} "
                f"| {_num(m['pcc'])} | {_num(m['ccc'])} |")
    lines = [f"## Metrics ({f.primary} split, {m['n']} clips, each scored once from all sampled frames)", "", *rows, ""]
    if "mean_accuracy_ci95_low" in m:
        lines.append(f"- Mean accuracy 95% bootstrap CI: {_num(m['mean_accuracy_ci95_low'])}–"
                     f"{_num(m['mean_accuracy_ci95_high'])}.")
    if f.val_mean_accuracy is not None and f.primary != "val":
        lines.append(f"- Validation mean accuracy: {_num(f.val_mean_accuracy)}.")
    lines += _reference_lines(f)
    return "\n".join(lines) + "\n"


def _reference_lines(f: CardFacts) -> list[str]:
    """The noise floor on the sample; the published results on ChaLearn."""
    if f.source == "sample":
        if f.noise_floor is None:
            return ["- Noise floor: not recorded (no sample_metadata.json)."]
        gap = f.noise_floor - f.metrics["mean_accuracy"]
        return [f"- Noise floor (best mean accuracy reachable given the sample's label noise): "
                f"{_num(f.noise_floor)}; this model is {_num(gap)} below it.",
                "- These are figures on synthetic data: they say the pipeline learns what the sample encodes, "
                "nothing about real footage."]
    lines = ["- Published results on the ChaLearn test set (mean accuracy), for reference:"]
    lines += [f"  - {name}: {value:.4f}" for name, value in PUBLISHED]
    return lines


def _groups(f: CardFacts) -> str:
    groups = f.metrics.get("groups") or {}
    if not groups:
        return "## Per-group metrics\n\nNot available: the labels carry no gender or ethnicity annotations.\n"
    lines = ["## Per-group metrics", "", "| attribute | group | clips | mean accuracy | baseline | Pearson r | CCC |",
             "|---|---|---|---|---|---|---|"]
    for attr, block in groups.items():
        for name, g in block["groups"].items():
            small = " (few clips)" if g["n"] < SMALL_GROUP else ""
            lines.append(f"| {attr} | {name}{small} | {g['n']} | {_num(g['mean_accuracy'])} "
                         f"| {_num(g.get('baseline_mean_accuracy'))} | {_num(g['pcc'])} | {_num(g['ccc'])} |")
    lines.append("")
    for attr, block in groups.items():
        accs = {n: g["mean_accuracy"] for n, g in block["groups"].items()}
        best, worst = max(accs, key=accs.get), min(accs, key=accs.get)
        lines.append(f"- {attr} gap (largest − smallest mean accuracy): {_num(block['accuracy_gap'], 4)} "
                     f"({best} vs {worst}).")
    return "\n".join(lines) + "\n"


def _limitations(f: CardFacts) -> str:
    lines = ["## Known limitations", "",
             "- Perceived personality only: the targets are annotators' impressions, with their biases "
             "(appearance, gender, age, ethnicity, video quality) built in.",
             "- Visual only: the face and its motion; no audio, words or scene.",
             "- One face per clip, frontal and visible: clips whose face detection falls below the training "
             "data's quality are flagged by `bigfive predict`, and their scores are less reliable."]
    if f.shared_subjects:
        lines.append(f"- {f.shared_subjects} people appear in more than one split ({f.split_scheme} split), "
                     "which flatters the test figures; `data.split: subject_disjoint` avoids it.")
    small = sorted({f"{name} ({g['n']})" for block in (f.metrics.get("groups") or {}).values()
                    for name, g in block["groups"].items() if g["n"] < SMALL_GROUP})
    if small:
        lines.append(f"- Groups with fewer than {SMALL_GROUP} test clips: {', '.join(small)}; their figures are "
                     "uncertain, so a small gap does not show that the model treats groups alike.")
    if f.source == "sample":
        lines.append("- Trained on synthetic labels: do not use its scores on real people.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- outputs


def description(card: str, artifact: str) -> str:
    """The card as a registry description: whole when it fits the registry's limit, else cut at a line
    with a pointer to the full artifact."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    tail = f"\n\n… (cut to fit the registry; the full card is the run's artifact `{artifact}`)\n"
    head = card[:DESCRIPTION_LIMIT - len(tail)]
    return head[:head.rfind("\n")] + tail


def publish(client: Any, run_id: str, run_info: dict[str, Any], card: str, artifact: str) -> bool:
    """Set the card as the description of the version ``run_info`` names, if that version is this run's."""
    name, version = run_info.get("registered_model"), run_info.get("model_version")
    if not (name and version):
        log.info("no registered model version in run.json: the model card is not set as a description")
        return False
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as err:
        log.warning("registered model %s version %s not found (%s): model card not published", name, version,
                    (str(err).strip().splitlines() or [type(err).__name__])[0])
        return False
    if mv.run_id != run_id:
        log.warning("%s version %s belongs to run %s, not %s: model card not published", name, version,
                    mv.run_id, run_id)
        return False
    client.update_model_version(name, str(version), description=description(card, artifact))
    log.info("model card set as the description of %s version %s", name, version)
    return True
