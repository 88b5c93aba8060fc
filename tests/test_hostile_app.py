"""`bigfive app` under careless and hostile use (issue 26): a real server (uvicorn, `bigfive app` in a subprocess
on 127.0.0.1, a free port, stopped by PID) with a tiny real checkpoint; no pipeline needed.

What the app keeps is checked on disk: its temporary folder is found under the TMPDIR the test gives it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S, clean_env, serve
from hostile_clips import long_clip
from playwright.sync_api import expect
from synth_clips import write_clip
from test_predict import make_checkpoint

TTL_S, BODY_TIMEOUT_S = 4, 2


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("files")
    return {"model": make_checkpoint(d / "model.pt"), "clip": write_clip(d / "talk.mp4", frames=12),
            "long": long_clip(d / "long.mp4", 58)}


def app_command(files: dict[str, Path], *extra: str):
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "bigfive", "app", "--model", str(files["model"]), "--port", str(port),
                "--max-queue", "1", "--result-ttl", str(TTL_S), "--body-timeout", str(BODY_TIMEOUT_S),
                "--max-upload-mb", "50", *extra]
    return command


def app_env(tmp: Path) -> dict[str, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {**clean_env(), "TMPDIR": str(tmp)}


@pytest.fixture(scope="module")
def app(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    log = root / "app.log"
    with serve(app_command(files), "/api/info", log, env=app_env(root / "tmp"), cwd=root) as (base, proc):
        yield {"base": base, "proc": proc, "log": log, "tmp": root / "tmp",
               "port": int(base.rsplit(":", 1)[1])}


def workdir(app) -> Path:
    [folder] = list(app["tmp"].glob("bigfive-app-*"))
    return folder


def stored_files(app) -> list[str]:
    return sorted(str(p.relative_to(workdir(app))) for p in workdir(app).rglob("*") if p.is_file())


def request(app, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", app["port"], timeout=HANG_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def upload(app, clip: Path, name: str | None = None, headers: dict | None = None):
    return request(app, "POST", f"/api/upload?name={name or clip.name}", clip.read_bytes(), headers)


def wait_job(app, job: str) -> dict:
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        status, _, body = request(app, "GET", f"/api/jobs/{job}")
        view = json.loads(body)
        if status != 200 or view["stage"] == "done":
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job} never finished")


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.1)


def test_every_response_says_nosniff_and_a_restrictive_csp(app):
    for path in ("/", "/api/info", "/static/app.js", "/api/jobs/nope"):
        _, headers, _ = request(app, "GET", path)
        assert headers["x-content-type-options"] == "nosniff", path
        assert "default-src 'none'" in headers["content-security-policy"] and "frame-ancestors 'none'" in \
            headers["content-security-policy"], path


def test_a_foreign_host_is_refused(app):
    status, _, body = request(app, "GET", "/api/info", headers={"Host": "evil.example"})
    assert status == 421 and "evil.example" in json.loads(body)["error"]
    status, _, _ = request(app, "GET", "/api/info", headers={"Host": f"localhost:{app['port']}"})
    assert status == 200


def test_a_cross_origin_post_is_refused_and_leaves_nothing(app, files):
    before = stored_files(app)
    for headers in ({"Origin": "http://evil.example", "Content-Type": "text/plain"},
                    {"Referer": "http://evil.example/page.html"}, {"Origin": "null"}):
        status, _, body = upload(app, files["clip"], headers=headers)
        assert status == 403 and "cross-site request refused" in json.loads(body)["error"], headers
    assert stored_files(app) == before
    status, _, body = upload(app, files["clip"], headers={"Origin": app["base"]})  # the page itself
    assert status == 202
    wait_job(app, json.loads(body)["job"])


def test_the_upload_is_deleted_after_its_result_which_expires(app, files):
    status, _, body = upload(app, files["clip"])
    assert status == 202
    job = json.loads(body)["job"]
    view = wait_job(app, job)
    assert "status" in view
    left = [f for f in stored_files(app) if f.startswith(job)]
    assert all(f.endswith("explain.png") for f in left), left  # the clip itself is gone, only the figure stays
    wait_until(lambda: not (workdir(app) / job).exists(), f"job {job}'s folder outlived --result-ttl")
    assert request(app, "GET", f"/api/jobs/{job}")[0] == 404


def test_job_files_are_named_by_the_server(app):
    status, _, body = request(app, "POST", "/api/upload?name=explain.png", b"<svg>not a video, not a figure</svg>")
    assert status == 202
    job = json.loads(body)["job"]
    view = wait_job(app, job)
    assert view["status"] == "error" and view["error"].startswith("explain.png: ")
    assert request(app, "GET", f"/api/jobs/{job}/figure.png")[0] == 404  # the upload is never served as the figure


def partial_upload(app, declared: int, sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", app["port"]), timeout=HANG_S)
    sock.sendall(f"POST /api/upload?name=part.mp4 HTTP/1.1\r\nHost: 127.0.0.1:{app['port']}\r\n"
                 f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n".encode())
    sock.sendall(b"\0" * sent)
    return sock


def new_files(app, before: list[str]) -> list[str]:
    return [f for f in stored_files(app) if f not in before]


def test_an_aborted_upload_leaves_no_file_and_no_traceback(app):
    before = stored_files(app)
    sock = partial_upload(app, 5_000_000, 200_000)
    wait_until(lambda: new_files(app, before), "the partial upload never arrived")
    sock.close()
    wait_until(lambda: not new_files(app, before), "the partial file stayed")
    wait_until(lambda: "abandoned by the client" in app["log"].read_text(), "no log line for the disconnect")
    log = app["log"].read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log


def test_a_stalled_upload_is_dropped_after_the_body_timeout(app):
    before = stored_files(app)
    sock = partial_upload(app, 5_000_000, 1000)
    chunks = []
    try:  # the server answers (and closes) after --body-timeout; the head and the body may come in separate reads
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    finally:
        sock.close()
    answer = b"".join(chunks).decode()
    assert answer.startswith("HTTP/1.1 408") and "the upload stalled" in answer
    wait_until(lambda: not new_files(app, before), "the stalled file stayed")


def test_a_full_queue_answers_503_and_a_running_job_can_be_cancelled(app, files):
    status, _, body = upload(app, files["long"])
    assert status == 202
    job = json.loads(body)["job"]
    status, headers, body = upload(app, files["clip"])  # --max-queue 1: the long clip holds the only place
    assert status == 503 and int(headers["retry-after"]) > 0 and "the queue is full" in json.loads(body)["error"]
    status, _, _ = request(app, "POST", f"/api/jobs/{job}/cancel")
    assert status == 200
    view = wait_job(app, job)
    assert view["status"] == "error" and view["error"] == "long.mp4: cancelled"
    assert not any(f.startswith(job) and "clip" in f for f in stored_files(app))
    assert upload(app, files["clip"])[0] == 202  # room again


def test_the_cancel_button_stops_the_job_in_the_page(app, files, chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(HANG_S * 1000)
    try:
        page.goto(app["base"] + "/")
        expect(page.locator("#model")).not_to_have_text("…", timeout=HANG_S * 1000)  # CSP: no wait_for_function
        assert "deleted" in page.inner_text("#privacy") and "minutes" in page.inner_text("#privacy")
        wait_until(lambda: json.loads(request(app, "GET", "/api/info")[2]) and _queue_empty(app), "queue busy")
        page.set_input_files("#file", str(files["long"]))
        page.click("#upload-btn")
        page.wait_for_selector("#cancel-btn", state="visible")
        expect(page.locator("#status")).to_have_text(re.compile("^step"), timeout=HANG_S * 1000)
        page.click("#cancel-btn")
        page.wait_for_selector("#error:not([hidden])", state="visible")
        assert page.inner_text("#error") == "long.mp4: cancelled"
    finally:
        context.close()


def _queue_empty(app) -> bool:
    return not any("clip" in f for f in stored_files(app))


def test_sigterm_stops_the_running_job_and_removes_the_temporary_folder(files, tmp_path):
    tmp = tmp_path / "tmp"
    with serve(app_command(files), "/api/info", tmp_path / "app.log", env=app_env(tmp), cwd=tmp_path) as (base, proc):
        app = {"port": int(base.rsplit(":", 1)[1]), "tmp": tmp}
        status, _, body = upload(app, files["long"])
        assert status == 202
        wait_until(lambda: json.loads(request(app, "GET", f"/api/jobs/{json.loads(body)['job']}")[2])["stage"]
                   != "queued", "the job never started")
        assert list(tmp.glob("bigfive-app-*"))
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=HANG_S)
    assert proc.returncode != -signal.SIGKILL
    assert list(tmp.glob("bigfive-app-*")) == [], "the temporary folder with the uploads stayed on disk"


def test_a_job_over_its_time_limit_is_stopped_and_its_clip_deleted(files, tmp_path):
    """The queue in-process with the real predictor: a limit shorter than the header probe stops the job at
    its first decoded frame, with the reason naming the option."""
    import shutil

    from bigfive.app.jobs import JobQueue
    from bigfive.inference.predictor import Predictor

    queue = JobQueue(Predictor(files["model"], device="cpu"), tmp_path / "jobs", job_timeout_s=1e-6)
    try:
        job_id, folder = queue.new_folder()
        shutil.copyfile(files["clip"], folder / "clip.mp4")
        job = queue.submit(job_id, "talk.mp4", folder / "clip.mp4")
        wait_until(lambda: job.finished, "the job never finished")
    finally:
        queue.close()
    assert job.result.status == "error" and "over the per-job time limit" in job.result.error
    assert "--job-timeout" in job.result.error and not (folder / "clip.mp4").exists()


def test_a_folder_left_by_a_killed_app_is_removed_and_a_live_ones_kept(tmp_path):
    from bigfive.app.main import PREFIX, sweep_orphans

    dead = subprocess_pid_that_exited()
    orphan, live = tmp_path / f"{PREFIX}{dead}-abc", tmp_path / f"{PREFIX}{os.getpid()}-def"
    for folder in (orphan, live):
        (folder / "job").mkdir(parents=True)
        (folder / "job" / "clip.mp4").write_bytes(b"a face")
    assert sweep_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and (live / "job" / "clip.mp4").is_file()


def subprocess_pid_that_exited() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
