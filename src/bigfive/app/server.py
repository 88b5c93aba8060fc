"""The FastAPI app behind ``bigfive app``: one HTML page, a JSON API, the explanation figures.

- ``GET /`` the page (static/index.html, app.js, app.css: no CDN, no fonts, works offline)
- ``GET /api/info`` the model, its traits, the training labels' distribution, the sample's test clips
- ``POST /api/upload?name=clip.mp4`` the clip as the raw request body (no multipart parser needed;
  the size limit is checked on Content-Length and again while streaming) -> ``{"job": id}``; 503 with
  ``Retry-After`` when the queue is full (checked before the body is read)
- ``POST /api/jobs/{id}/cancel`` stop a queued or running job
- ``POST /api/sample/{video_id}`` one of the sample's test clips -> ``{"job": id}``
- ``GET /api/jobs/{id}`` stage while running; traits, quality and warnings, or the error line when done
- ``GET /api/jobs/{id}/figure.png`` the ``bigfive predict --explain`` figure of that clip
- ``GET /model-card`` and ``/model-card.md`` the model card

Every error answers ``{"error": "<one line>"}``; a clip that cannot be predicted says
``<file>: <reason>``, the line ``bigfive predict`` prints. :mod:`bigfive.app.guard` sits in front of all
of it (Host and Origin checks, nosniff, CSP). The clip is stored under a server-made name
(``clip<.ext>``), so no upload name can collide with the job's figure or leave its folder.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from bigfive.app.guard import SameOrigin
from bigfive.app.jobs import STAGES, Job, JobQueue, QueueFull
from bigfive.inference.predict import VIDEO_EXTENSIONS

log = logging.getLogger("bigfive.app")
STATIC = Path(__file__).parent / "static"
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
RETRY_AFTER_S = 30  # what a refused upload is told to wait: about one clip's prediction


@dataclass
class AppState:
    queue: JobQueue
    info: dict[str, Any]  # /api/info: model, traits, distribution, sample clip ids, upload limit
    samples: dict[str, Path]  # video_id -> clip
    max_upload_bytes: int
    card: tuple[str, str] | None  # (text, source)
    hosts: set[str]  # the Host values this server answers to (bigfive.app.guard)
    body_timeout_s: float = 30.0  # an upload that sends nothing for this long is dropped


def safe_name(name: str) -> str:
    """A file name that is safe to write: the last path part, odd characters replaced, at most 100 long."""
    base = UNSAFE.sub("_", Path(name.replace("\\", "/")).name).lstrip(".")[-100:]
    return base or "upload"


def stored_name(name: str) -> str:
    """The server's name for an uploaded clip: ``clip`` and the upload's extension when it is a video's."""
    suffix = Path(safe_name(name)).suffix.lower()
    return "clip" + (suffix if suffix in VIDEO_EXTENSIONS else "")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def job_view(queue: JobQueue, job: Job) -> dict[str, Any]:
    """What the page polls: the stage while running, the prediction (or its error line) when done."""
    out: dict[str, Any] = {"id": job.id, "name": job.name, "stage": job.stage, "stage_text": STAGES[job.stage]}
    if job.stage == "queued":
        out["waiting"] = queue.waiting_before(job)
    pred = job.result
    if pred is None:
        return out
    out["status"] = pred.status
    if not pred.ok:
        out["error"] = f"{job.name}: {pred.error}"  # the line `bigfive predict` prints, with the given name
        return out
    # formatted here, as `bigfive predict` formats them, so the page shows the CLI's digits exactly
    out["traits"] = [{"name": k, "value": v, "text": f"{v:.3f}"} for k, v in pred.traits.items()]
    out["quality"] = {"detection_rate": f"{pred.detection_rate:.2f}", "mean_confidence": f"{pred.mean_confidence:.3f}"}
    out["warning"], out["notes"] = pred.warning, pred.notes
    out["figure"] = f"/api/jobs/{job.id}/figure.png" if job.figure.is_file() else None
    return out


async def receive(request: Request, dest: Path, limit: int, name: str, idle_s: float) -> JSONResponse | None:
    """Stream the body into ``dest``; an error response when it is over ``limit`` bytes, stalls for ``idle_s``
    or the client goes away (the caller then removes the partial file)."""
    over = f"{name}: the file is larger than the upload limit of {megabytes(limit)} (bigfive app --max-upload-mb)"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return error(413, over)
    size = 0
    chunks = request.stream().__aiter__()
    with dest.open("wb") as f:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
            except StopAsyncIteration:
                return None
            except (TimeoutError, asyncio.TimeoutError):
                log.info("upload of %s dropped: nothing received for %g s", name, idle_s)
                return error(408, f"{name}: the upload stalled (nothing received for {idle_s:g} s; "
                                  "bigfive app --body-timeout)")
            except ClientDisconnect:  # not a server error: one log line, no traceback, no file left
                log.info("upload of %s abandoned by the client after %s", name, megabytes(size))
                return error(400, f"{name}: the upload was interrupted")
            size += len(chunk)
            if size > limit:  # a client that sends more than it declared, or no length at all
                return error(413, over)
            f.write(chunk)


def create_app(state: AppState) -> SameOrigin:
    app = FastAPI(title="bigfive", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return state.info

    @app.post("/api/upload")
    async def upload(request: Request, name: str = "upload.mp4") -> JSONResponse:
        clean = safe_name(name)
        try:
            state.queue.check_room()  # before the body: a full queue costs the client no upload
        except QueueFull as err:
            return error(503, str(err), {"Retry-After": str(RETRY_AFTER_S)})
        job_id, folder = state.queue.new_folder()
        dest, kept = folder / stored_name(clean), False
        try:
            refused = await receive(request, dest, state.max_upload_bytes, clean, state.body_timeout_s)
            kept = refused is None
        finally:  # also when the request task itself is cancelled: no partial clip stays
            if not kept:
                shutil.rmtree(folder, ignore_errors=True)
        return refused if refused is not None else submit(job_id, clean, dest)

    def submit(job_id: str, name: str, clip: Path) -> JSONResponse:
        try:
            return JSONResponse({"job": state.queue.submit(job_id, name, clip).id}, status_code=202)
        except QueueFull as err:
            return error(503, str(err), {"Retry-After": str(RETRY_AFTER_S)})

    @app.post("/api/sample/{video_id}")
    def sample(video_id: str) -> JSONResponse:
        clip = state.samples.get(video_id)
        if clip is None:
            return error(404, f"{video_id}: not one of the sample's test clips")
        job_id, folder = state.queue.new_folder()
        dest = folder / stored_name(clip.name)
        shutil.copyfile(clip, dest)  # the job owns its copy, deleted after the prediction; data/raw is never touched
        return submit(job_id, clip.name, dest)

    def view(found: Job | None, job_id: str) -> JSONResponse:
        if found is None:
            return error(404, f"no job {job_id} (results are kept for {state.queue.result_ttl_s:g} s, then deleted)")
        return JSONResponse(job_view(state.queue, found))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> JSONResponse:
        return view(state.queue.cancel(job_id), job_id)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> JSONResponse:
        return view(state.queue.get(job_id), job_id)

    @app.get("/api/jobs/{job_id}/figure.png")
    def figure(job_id: str) -> Any:
        found = state.queue.get(job_id)
        if found is None or not found.figure.is_file():
            return error(404, f"no figure for job {job_id}")
        return FileResponse(found.figure, media_type="image/png")

    @app.get("/model-card.md", response_class=PlainTextResponse)
    def card_text() -> Any:
        if state.card is None:
            return error(404, "no model card: run `bigfive evaluate` (it writes results/model_card.md)")
        return PlainTextResponse(state.card[0], media_type="text/markdown; charset=utf-8")

    @app.get("/model-card", response_class=HTMLResponse)
    def card_page() -> HTMLResponse:
        if state.card is None:
            body = "<p>No model card: run <code>bigfive evaluate</code> (it writes results/model_card.md).</p>"
        else:
            body = (f"<p class='source'>From {html.escape(state.card[1])} · <a href='/model-card.md'>Markdown</a>"
                    f" · <a href='/'>back to the page</a></p><pre id='card'>{html.escape(state.card[0])}</pre>")
        head = "<meta charset='utf-8'><title>Model card</title><link rel='stylesheet' href='/static/app.css'>"
        return HTMLResponse(f"<!doctype html><html lang='en'><head>{head}</head><body><main>{body}</main></body>"
                            "</html>")

    return SameOrigin(app, state.hosts)
