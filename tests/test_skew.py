"""Train/serve skew: `bigfive predict` on a raw clip gives that clip's row of the evaluation predictions.

The session's tiny pipeline (tests/conftest.py: real `dvc repro` of raw -> faces -> flow -> features ->
train -> evaluate on generated sample clips, in a temporary repository) supplies the checkpoint, the raw
clips and `results/predictions_test.csv`; nothing here needs the project's own data/. On CPU the two
paths must agree within 1e-5 per trait: the same preprocessing (the stages' vs predict's) and the same
inference function (bigfive.models.infer.infer), differing only in batch composition and in the 6
decimals both outputs are written with.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bigfive.cli import main

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5


def test_predict_on_raw_clips_matches_the_evaluation_predictions(tiny_pipeline, tmp_path, monkeypatch, capsys):
    project = tiny_pipeline
    monkeypatch.chdir(project)  # the project's params.yaml, as `bigfive predict` run there would read
    evaluated = pd.read_csv(project / "results/predictions_test.csv", dtype={"video_id": str}).set_index("video_id")
    manifest = pd.read_csv(project / "data/raw/manifest.csv", dtype={"video_id": str}).set_index("video_id")
    pred_columns = [c for c in evaluated.columns if c.endswith("_pred")]
    spread = (evaluated[pred_columns].max() - evaluated[pred_columns].min()).max()
    # clips must differ by far more than the tolerance, or a swapped or mis-preprocessed clip would pass
    assert spread > 10 * TOLERANCE, f"the tiny model predicts (nearly) one value for every clip: spread {spread}"
    clips = [str(project / "data/raw" / manifest.loc[video_id, "path"]) for video_id in evaluated.index]

    rc = main(["predict", "--no-progress", *clips, "--model", str(project / "models/best.pt"), "--device", "cpu",
               "--workers", "1", "--output", str(tmp_path / "pred.json")])
    assert rc == 0, capsys.readouterr().err
    records = json.loads((tmp_path / "pred.json").read_text())["clips"]
    assert [r["clip"] for r in records] == clips
    traits = [c.removesuffix("_pred") for c in pred_columns]
    for video_id, rec in zip(evaluated.index, records):
        assert rec["status"] == "ok", rec
        assert list(rec["traits"]) == traits, f"{video_id}: predict reports {list(rec['traits'])}, evaluate {traits}"
        for trait in traits:
            want = float(evaluated.loc[video_id, f"{trait}_pred"])
            got = rec["traits"][trait]
            assert abs(got - want) <= TOLERANCE, f"{video_id} {trait}: predict {got} vs evaluate {want}"
