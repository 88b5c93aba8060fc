"""`bigfive app` in a real browser: the tiny pipeline's champion served by uvicorn on 127.0.0.1, driven by
headless Debian Chromium (Playwright), compared with what `bigfive predict` prints for the same clips."""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import HANG_S, clean_env, serve
from playwright.sync_api import expect

from bigfive import TRAITS
from bigfive.app.jobs import JobQueue
from bigfive.app.server import job_view, safe_name
from bigfive.cli import main
from bigfive.inference.predictor import Predictor

LIMIT_MB = 1.0  # small, so that an over-limit file is cheap to make


def test_safe_name_keeps_a_plain_file_name_and_defuses_the_rest():
    assert safe_name("-3x3VjMdTb2.005.mp4") == "-3x3VjMdTb2.005.mp4"
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\my clip (1).mov") == "my_clip_1_.mov"
    assert safe_name("..") == "upload" and safe_name("") == "upload"
    assert len(safe_name("a" * 500 + ".mp4")) == 100


@pytest.mark.parametrize("flag, value, message", [("--port", "0", "--port must be between 1 and 65535, got 0"),
                                                  ("--max-upload-mb", "0", "--max-upload-mb must be positive")])
def test_bad_options_are_refused_before_loading_anything(capsys, flag, value, message):
    assert main(["app", "--model", "no/such/model.pt", flag, value]) == 2
    assert message in capsys.readouterr().err


def test_stages_are_reported_in_order_and_the_queue_returns_the_same_prediction(tmp_path):
    from test_predict import carphone, make_checkpoint

    predictor = Predictor(make_checkpoint(tmp_path / "model.pt"), device="cpu")
    stages: list[str] = []
    direct = predictor.predict(carphone(), explain_to=tmp_path / "direct.png", stage=stages.append)
    assert direct.ok and stages == ["faces", "flow", "model", "figure"]
    assert predictor.predict(carphone()).traits == direct.traits  # the callback changes nothing

    queue = JobQueue(predictor, tmp_path / "jobs")
    try:
        job_id, folder = queue.new_folder()
        shutil.copyfile(carphone(), folder / "talk.mp4")
        job = queue.submit(job_id, "talk.mp4", folder / "talk.mp4")
        deadline = time.monotonic() + HANG_S
        while not job.finished and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        queue.close()
    view = job_view(queue, job)
    assert view["status"] == "ok" and view["stage"] == "done"
    assert [t["text"] for t in view["traits"]] == [f"{v:.3f}" for v in direct.traits.values()]
    assert view["figure"] == f"/api/jobs/{job_id}/figure.png" and job.figure.is_file()


# ------------------------------------------------------------------------------------------- the real page


@pytest.fixture(scope="module")
def app(tiny_pipeline: Path, tmp_path_factory):
    """The app with its defaults (champion model, 127.0.0.1), run in the tiny pipeline's project."""
    log = tmp_path_factory.mktemp("app") / "app.log"

    def command(port: int) -> list[str]:
        return ["bigfive", "app", "--port", str(port), "--max-upload-mb", str(LIMIT_MB)]

    with serve(command, "/api/info", log, env=clean_env(), cwd=tiny_pipeline) as (base, proc):
        yield {"base": base, "proc": proc, "project": tiny_pipeline, "log": log}


def sample_test_clips(project: Path) -> list[Path]:
    with (project / "data/raw/manifest.csv").open(newline="") as f:
        return [project / "data/raw" / r["path"] for r in csv.DictReader(f) if r["split"] == "test"]


def cli_predict(project: Path, clip: Path, explain: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--explain", str(explain)] if explain else []
    return subprocess.run(["bigfive", "predict", str(clip), "--no-progress", *extra], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=HANG_S)


def cli_traits(stdout: str) -> dict[str, str]:
    """The trait columns of `bigfive predict`'s one-clip table, as printed (3 decimals)."""
    header, row = stdout.strip().splitlines()[:2]
    return dict(zip(header.split()[1:6], row.split()[1:6]))


@pytest.fixture
def page(chromium, app):
    context = chromium.new_context(viewport={"width": 1100, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(HANG_S * 1000)
    page.goto(app["base"] + "/")
    # /api/info arrived (expect, not wait_for_function: the page's CSP forbids the eval that one uses)
    expect(page.locator("#model")).not_to_have_text("…", timeout=HANG_S * 1000)
    yield page
    context.close()


def wait_done(page) -> str:
    """Wait for the result or the error box; returns which one is shown."""
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", state="visible")
    return "result" if page.is_visible("#result") else "error"


@pytest.mark.slow
def test_uploaded_clip_shows_the_clis_traits_quality_and_figure(app, page, tmp_path):
    clip = sample_test_clips(app["project"])[0]
    cli = cli_predict(app["project"], clip, explain=tmp_path / "explain")
    assert cli.returncode == 0, cli.stderr
    expected = cli_traits(cli.stdout)
    assert list(expected) == list(TRAITS)

    assert "not a measurement of the person" in page.inner_text("#note")
    page.set_input_files("#file", str(clip))
    page.click("#upload-btn")
    assert wait_done(page) == "result", page.inner_text("#error")
    shown = {t: page.inner_text(f".trait-value[data-trait='{t}']") for t in TRAITS}
    assert shown == expected
    row = cli.stdout.strip().splitlines()[1].split()
    assert f"detection rate {row[6]}, mean confidence {row[7]}" in page.inner_text("#quality")
    # the bars are drawn against the training labels' distribution (the 90% and 50% bands, the median)
    assert page.locator(".track .band90").count() == page.locator(".track .median").count() == len(TRAITS)
    n_train = len(np.load(app["project"] / "data/features/train/labels.npy"))
    assert f"({n_train} training clips, data/features/train/labels.npy)" in page.inner_text("#legend")

    deadline = time.monotonic() + HANG_S
    while not page.eval_on_selector("#figure", "img => img.complete") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert page.eval_on_selector("#figure", "img => img.naturalWidth") > 0
    src = page.get_attribute("#figure", "src")
    with urllib.request.urlopen(app["base"] + src, timeout=HANG_S) as r:
        figure = r.read()
    assert figure == (tmp_path / "explain" / f"{clip.name}.png").read_bytes()  # the --explain figure itself
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_broken_file_shows_the_clis_one_line_reason(app, page, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video\n" * 64)
    cli = cli_predict(app["project"], broken)
    assert cli.returncode == 1
    line = next(ln for ln in cli.stderr.splitlines() if ln.startswith(f"{broken}: "))
    reason = line[len(f"{broken}: "):]

    page.set_input_files("#file", str(broken))
    page.click("#upload-btn")
    assert wait_done(page) == "error"
    assert page.inner_text("#error") == f"broken.mp4: {reason}"
    assert not page.is_visible("#result")
    page.screenshot(path=str(tmp_path / "app_error.png"), full_page=True)


@pytest.mark.slow
def test_sample_clip_can_be_picked_and_the_model_card_is_linked(app, page):
    options = page.eval_on_selector_all("#sample option", "os => os.map(o => o.value)")
    assert options == [c.stem for c in sample_test_clips(app["project"])]
    page.select_option("#sample", options[-1])
    page.click("#sample-btn")
    assert wait_done(page) == "result", page.inner_text("#error")
    assert page.inner_text("#clip-name") == f"{options[-1]}.mp4"
    assert all(0 <= float(page.inner_text(f".trait-value[data-trait='{t}']")) <= 1 for t in TRAITS)

    page.click("#card-link")
    page.wait_for_selector("#card")
    card = (app["project"] / "results/model_card.md").read_text()
    assert page.inner_text("#card").strip() == card.strip()  # the registered version's description
    assert "MLflow registry, models:/bigfive-xattn@champion" in page.inner_text(".source")


@pytest.mark.slow
def test_oversized_upload_is_refused_by_the_page_and_by_the_server(app, page, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * int(LIMIT_MB * 1e6 + 1))
    message = f"big.mp4: the file is larger than the upload limit of {LIMIT_MB:.1f} MB (bigfive app --max-upload-mb)"
    page.set_input_files("#file", str(big))
    page.click("#upload-btn")
    assert wait_done(page) == "error" and page.inner_text("#error") == message

    # the server enforces it too: on the declared length, and while streaming a body without one
    request = urllib.request.Request(app["base"] + "/api/upload?name=big.mp4", data=big.read_bytes(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=HANG_S)
    assert err.value.code == 413 and json.loads(err.value.read())["error"] == message
    host, port = app["base"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=HANG_S)
    chunks = (b"\0" * 100_000 for _ in range(12))
    conn.request("POST", "/api/upload?name=big.mp4", body=chunks, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"] == message
    conn.close()


@pytest.mark.slow
def test_app_listens_on_loopback_only_by_default(app):
    port = int(app["base"].rsplit(":", 1)[1])
    family = [psutil.Process(app["proc"].pid), *psutil.Process(app["proc"].pid).children(recursive=True)]
    addresses = {c.laddr.ip for p in family for c in p.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert addresses == {"127.0.0.1"}
