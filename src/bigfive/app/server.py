"""The FastAPI app behind ``bigfive app``: one HTML page, a JSON API, the explanation figures.

- ``GET /`` the page (static/index.html, app.js, app.css: no CDN, no fonts, works offline)
- ``GET /api/info`` the model, its traits, the training labels' distribution, the sample's test clips
- ``POST /api/upload?name=clip.mp4`` the clip as the raw request body (no multipart parser needed;
  the size limit is checked on Content-Length and again while streaming) -> ``{"job": id}``
- ``POST /api/sample/{video_id}`` one of the sample's test clips -> ``{"job": id}``
- ``GET /api/jobs/{id}`` stage while running; traits, quality and warnings, or the error line when done
- ``GET /api/jobs/{id}/figure.png`` the ``bigfive predict --explain`` figure of that clip
- ``GET /model-card`` and ``/model-card.md`` the model card

Every error answers ``{"error": "<one line>"}``; a clip that cannot be predicted says
``<file>: <reason>``, the line ``bigfive predict`` prints.
"""

from __future__ import annotations

import html
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from bigfive.app.jobs import STAGES, Job, JobQueue

STATIC = Path(__file__).parent / "static"
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class AppState:
    queue: JobQueue
    info: dict[str, Any]  # /api/info: model, traits, distribution, sample clip ids, upload limit
    samples: dict[str, Path]  # video_id -> clip
    max_upload_bytes: int
    card: tuple[str, str] | None  # (text, source)


def safe_name(name: str) -> str:
    """A file name that is safe to write: the last path part, odd characters replaced, at most 100 long."""
    base = UNSAFE.sub("_", Path(name.replace("\\", "/")).name).lstrip(".")[-100:]
    return base or "upload"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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


async def receive(request: Request, dest: Path, limit: int, name: str) -> JSONResponse | None:
    """Stream the body into ``dest``; an error response when it is over ``limit`` bytes (nothing kept)."""
    over = f"{name}: the file is larger than the upload limit of {megabytes(limit)} (bigfive app --max-upload-mb)"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return error(413, over)
    size = 0
    with dest.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a client that sends more than it declared, or no length at all
                break
            f.write(chunk)
    if size > limit:
        dest.unlink()
        return error(413, over)
    return None


def create_app(state: AppState) -> FastAPI:
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
        job_id, folder = state.queue.new_folder()
        refused = await receive(request, folder / clean, state.max_upload_bytes, clean)
        if refused is not None:
            shutil.rmtree(folder, ignore_errors=True)
            return refused
        return JSONResponse({"job": state.queue.submit(job_id, clean, folder / clean).id}, status_code=202)

    @app.post("/api/sample/{video_id}")
    def sample(video_id: str) -> JSONResponse:
        clip = state.samples.get(video_id)
        if clip is None:
            return error(404, f"{video_id}: not one of the sample's test clips")
        job_id, folder = state.queue.new_folder()
        shutil.copyfile(clip, folder / clip.name)  # the job owns its copy, so eviction never touches data/raw
        return JSONResponse({"job": state.queue.submit(job_id, clip.name, folder / clip.name).id}, status_code=202)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> JSONResponse:
        found = state.queue.get(job_id)
        if found is None:
            return error(404, f"no job {job_id} (finished jobs are kept for a while, then removed)")
        return JSONResponse(job_view(state.queue, found))

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

    return app
