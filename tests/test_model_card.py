"""The model card: rendered from measured metrics, cut to the registry's limit, set as the registered
version's description in a real MLflow store, and written by the real evaluate stage (tiny pipeline)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bigfive import TRAITS
from bigfive.evaluation import metrics as M
from bigfive.evaluation import model_card
from bigfive.evaluation.model_card import DESCRIPTION_LIMIT, CardFacts, description, publish, render


def measured(n: int = 40, seed: int = 0) -> dict:
    """Real metrics of noisy predictions, with per-group figures, as evaluate computes them."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.1, 0.9, size=(n, 5))
    pred = np.clip(true + rng.normal(0, 0.05, size=true.shape), 0, 1)
    base = true.mean(axis=0) + 0.01
    out = M.summarize_with_baseline(pred, true, TRAITS, base)
    out.update(M.bootstrap_ci(pred, true, 50, baseline_means=base))
    gender = ["male" if i % 3 else "female" for i in range(n)]
    ethnicity = [("Asian", "Caucasian", "African-American")[i % 3] if i % 5 else None for i in range(n)]
    out["groups"] = M.group_metrics(pred, true, {"gender": gender, "ethnicity": ethnicity}, TRAITS, base)
    return out


def facts(source: str = "sample", metrics: dict | None = None, **kw) -> CardFacts:
    base = dict(model="bigfive-xattn version 7", run_id="abc123", traits=list(TRAITS), source=source,
                split_scheme="official", counts={"train": 24, "val": 8, "test": 40}, features_hash="f00d",
                features_hash_source="dvc.lock", preprocess={"frames": 4, "crop_size": 32, "flow": {"method": "dis"}},
                primary="test", metrics=metrics or measured(), noise_floor=0.9761, shared_subjects=5,
                val_mean_accuracy=0.93)
    base.update(kw)
    return CardFacts(**base)


def test_card_states_the_measured_values():
    m = measured()
    card = render(facts(metrics=m))
    assert "**not a measurement of the person**" in card and "## Out of scope" in card
    row = re.search(r"^\| openness \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$", card, re.M)
    t = m["traits"]["openness"]
    assert row.groups() == (f"{t['accuracy']:.3f}", f"{t['baseline_accuracy']:.3f}", f"{t['pcc']:.3f}",
                            f"{t['ccc']:.3f}")
    assert f"**{m['mean_accuracy']:.3f}**" in card
    assert f"{m['mean_accuracy_ci95_low']:.3f}–{m['mean_accuracy_ci95_high']:.3f}" in card
    assert f"Noise floor (best mean accuracy reachable given the sample's label noise): 0.976; this model is " \
           f"{0.9761 - m['mean_accuracy']:.3f} below it" in card
    assert "Clips: 24 train / 8 val / 40 test (official split)" in card and "`f00d` (dvc.lock)" in card
    assert "5 people appear in more than one split" in card
    assert "Published results" not in card  # the sample is compared with its noise floor, not ChaLearn papers


def test_per_group_rows_and_gaps_come_from_group_metrics():
    m = measured()
    card = render(facts(metrics=m))
    for attr, block in m["groups"].items():
        accs = {name: g["mean_accuracy"] for name, g in block["groups"].items()}
        best, worst = max(accs, key=accs.get), min(accs, key=accs.get)
        assert f"- {attr} gap (largest − smallest mean accuracy): {block['accuracy_gap']:.4f} ({best} vs {worst})." \
            in card
        for name, g in block["groups"].items():
            flag = " (few clips)" if g["n"] < model_card.SMALL_GROUP else ""
            assert f"| {attr} | {name}{flag} | {g['n']} | {g['mean_accuracy']:.3f} |" in card
    # ethnicity is unknown for every fifth clip: those are left out of its groups, not counted as a group
    assert sum(g["n"] for g in m["groups"]["ethnicity"]["groups"].values()) == 32
    assert "Groups with fewer than 30 test clips" in card


def test_chalearn_card_quotes_the_published_references_and_no_noise_floor():
    card = render(facts(source="chalearn", noise_floor=None))
    assert "ChaLearn First Impressions V2" in card and "Noise floor" not in card
    for name, value in model_card.PUBLISHED:
        assert f"{name}: {value:.4f}" in card
    assert "synthetic" not in card


def test_card_without_demographics_says_so():
    m = measured()
    del m["groups"]
    card = render(facts(metrics=m))
    assert "Not available: the labels carry no gender or ethnicity annotations." in card
    assert "Groups with fewer than" not in card


def test_description_fits_the_registry_limit():
    card = render(facts())
    assert len(card) < DESCRIPTION_LIMIT and description(card, "evaluation/model_card.md") == card
    long = card + "".join(f"- padding line {i}\n" for i in range(400))
    cut = description(long, "evaluation/model_card.md")
    assert len(cut) <= DESCRIPTION_LIMIT and cut.endswith("the full card is the run's artifact "
                                                          "`evaluation/model_card.md`)\n")
    assert long.startswith(cut[:cut.index("\n\n…")])  # cut at a line end, nothing rewritten


def test_publish_sets_the_description_of_this_runs_version_only(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # not a registry another test set process-wide
    exp = client.create_experiment("card", artifact_location=(tmp_path / "mlruns").as_uri())
    mine, other = (client.create_run(exp).info.run_id for _ in range(2))
    client.create_registered_model("m")
    v1 = client.create_model_version("m", source=(tmp_path / "model").as_uri(), run_id=mine).version
    v2 = client.create_model_version("m", source=(tmp_path / "model").as_uri(), run_id=other).version
    card = render(facts())
    assert publish(client, mine, {"registered_model": "m", "model_version": str(v1)}, card, "a.md")
    assert client.get_model_version("m", str(v1)).description == card
    # run.json naming another run's version (a stale file) must not overwrite that version's card
    assert not publish(client, mine, {"registered_model": "m", "model_version": str(v2)}, card, "a.md")
    assert not client.get_model_version("m", str(v2)).description
    assert not publish(client, mine, {}, card, "a.md")
    assert not publish(client, mine, {"registered_model": "m", "model_version": "99"}, card, "a.md")


@pytest.mark.slow
def test_evaluate_stage_writes_logs_and_publishes_the_card(tiny_pipeline: Path):
    from mlflow.tracking import MlflowClient

    card = (tiny_pipeline / "results/model_card.md").read_text()
    metrics = json.loads((tiny_pipeline / "results/metrics.json").read_text())
    run_info = json.loads((tiny_pipeline / "models/run.json").read_text())
    assert f"# Model card: {run_info['registered_model']} version {run_info['model_version']}" in card
    assert f"**{metrics['mean_accuracy']:.3f}**" in card
    assert f"{metrics['noise_floor_mean_accuracy']:.3f}" in card
    for attr, block in metrics["groups"].items():
        assert f"{attr} gap (largest − smallest mean accuracy): {block['accuracy_gap']:.4f}" in card

    uri = f"sqlite:///{tiny_pipeline / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # not a registry another test set process-wide
    run = client.get_run(run_info["run_id"])
    assert f"`{run.data.tags['features_hash']}` ({run.data.tags['features_hash_source']})" in card
    assert "model_card.md" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "evaluation")}
    version = client.get_model_version(run_info["registered_model"], run_info["model_version"])
    assert version.description == card  # what the registry page of this version shows
