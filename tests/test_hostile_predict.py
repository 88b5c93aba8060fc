"""``bigfive predict -`` and piped input: a clear "stdin is not supported", not "file not found"."""

from __future__ import annotations

import os

from bigfive.inference.predict import STDIN_UNSUPPORTED, expand_inputs


def test_dash_and_pipes_are_reported_as_unsupported_stdin(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    clips, failures = expand_inputs(["-", str(pipe), str(tmp_path / "missing.mp4")])
    assert clips == [str(tmp_path / "missing.mp4")]  # still "file not found", from the predictor
    assert [(f.clip, f.error) for f in failures] == [("-", STDIN_UNSUPPORTED), (str(pipe), STDIN_UNSUPPORTED)]
    assert "standard input" in STDIN_UNSUPPORTED and "not supported" in STDIN_UNSUPPORTED


def test_cli_predict_dash_says_stdin_is_not_supported(tmp_path, capsys, monkeypatch):
    from bigfive.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc = main(["predict", "-", "--no-progress", "--model", str(tmp_path / "never-loaded.pt")])
    captured = capsys.readouterr()
    assert rc == 1
    assert f"-: {STDIN_UNSUPPORTED}" in captured.err
    assert "file not found" not in captured.err + captured.out and "zero-length" not in captured.err + captured.out
