"""Predictions queued for one worker thread, each with a stage the page polls to show progress.

One model, one clip at a time: MTCNN, the flow engine and the network are not shared between threads,
and two clips at once on a small CPU only make both slower. The queue is bounded (``max_queue``
unfinished jobs; :class:`QueueFull` beyond), each job has a time limit and can be cancelled: the
predictor asks :meth:`Job.stop_reason` before every decoded frame and every step, so a stop takes
effect within a frame's decode, not at the end of an hour-long clip.

Private by default: the uploaded clip is deleted as soon as its prediction is done, failed or
cancelled; only the result (traits, quality, the figure) stays, for ``result_ttl`` seconds after it is
done, then the job and its folder are removed by a sweeper thread. Job files are named by the server.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bigfive.inference.predictor import Predictor
from bigfive.inference.results import ClipPrediction

# What the page says while a job is at each step (Predictor.predict's stage names).
STAGES = {"queued": "waiting for the clip before it", "faces": "finding and tracking the face",
          "flow": "computing optical flow", "model": "running the model", "figure": "drawing the explanation",
          "done": "done"}


class QueueFull(RuntimeError):
    """``max_queue`` jobs are waiting or running: the upload is refused (503) before its body is read."""


@dataclass
class Job:
    id: str
    name: str  # the clip's file name as the user gave it (shown, never used as a path)
    clip: Path  # where the server stored it for the predictor (deleted once the prediction is over)
    timeout_s: float
    stage: str = "queued"
    result: ClipPrediction | None = None
    started: float | None = None  # time.monotonic() when the worker took it
    done_at: float | None = None
    cancelled: bool = False

    @property
    def figure(self) -> Path:
        return self.clip.parent / "explain.png"

    @property
    def finished(self) -> bool:
        return self.stage == "done"

    def stop_reason(self) -> str | None:
        """Why the running prediction must stop now (cancelled, over its time limit), or None."""
        if self.cancelled:
            return "cancelled"
        if self.started is not None and time.monotonic() - self.started > self.timeout_s:
            return f"stopped: over the per-job time limit of {self.timeout_s:g} s (bigfive app --job-timeout)"
        return None


class JobQueue:
    """Runs ``predictor.predict`` on submitted clips, one at a time, in submission order."""

    def __init__(self, predictor: Predictor, workdir: Path, *, max_queue: int = 4, job_timeout_s: float = 300.0,
                 result_ttl_s: float = 600.0, keep: int = 32):
        self.predictor = predictor
        self.workdir = workdir
        self.max_queue, self.job_timeout_s, self.result_ttl_s, self.keep = max_queue, job_timeout_s, result_ttl_s, keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigfive-predict")
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="bigfive-expire", daemon=True)
        self._sweeper.start()

    def unfinished(self) -> int:
        with self._lock:
            return self._unfinished_locked()

    def _unfinished_locked(self) -> int:
        return sum(not j.finished for j in self._jobs.values())

    def check_room(self) -> None:
        """Raise :class:`QueueFull` when ``max_queue`` jobs are waiting or running."""
        if self.unfinished() >= self.max_queue:
            raise self._full()

    def _full(self) -> QueueFull:
        return QueueFull(f"the queue is full ({self.max_queue} clips waiting or running; bigfive app --max-queue): "
                         "try again in a minute")

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and the folder its clip is written to before :meth:`submit`."""
        job_id = uuid.uuid4().hex
        folder = self.workdir / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job_id: str, name: str, clip: Path) -> Job:
        job = Job(job_id, name, clip, self.job_timeout_s)
        with self._lock:
            if self._unfinished_locked() >= self.max_queue:
                shutil.rmtree(clip.parent, ignore_errors=True)
                raise self._full()
            self._jobs[job_id] = job
            self._evict()
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop (a queued one never starts); its clip is deleted as for any other ending."""
        job = self.get(job_id)
        if job is not None and not job.finished:
            job.cancelled = True
            if job.started is None:  # still waiting: end it now, so it frees its --max-queue place at once
                self._end(job, ClipPrediction(job.name, status="error", error="cancelled"))
        return job

    def waiting_before(self, job: Job) -> int:
        with self._lock:
            ahead = list(self._jobs.values())
        return sum(not j.finished for j in ahead[:ahead.index(job)]) if job in ahead else 0

    def _run(self, job: Job) -> None:
        def stage(name: str) -> None:
            job.stage = name

        if job.finished:  # cancelled while it waited
            return
        result = None  # stays None if predict raises (the error is the future's, as before)
        try:
            job.started = time.monotonic()
            if job.cancelled or self._closed.is_set():
                result = ClipPrediction(job.name, status="error", error="cancelled")
            else:
                result = self.predictor.predict(job.clip, explain_to=job.figure, stage=stage, label=job.name,
                                                    stop=lambda: "server stopping" if self._closed.is_set()
                                                    else job.stop_reason())
        finally:
            self._end(job, result)

    @staticmethod
    def _end(job: Job, result: ClipPrediction | None) -> None:
        job.result = result
        job.clip.unlink(missing_ok=True)  # the face video goes as soon as its prediction is over
        job.done_at = time.monotonic()
        job.stage = "done"

    def _evict(self) -> None:
        """Drop the oldest finished jobs (and their files) beyond ``keep``; unfinished ones stay."""
        finished = [j for j in self._jobs.values() if j.finished]
        for job in finished[:max(0, len(self._jobs) - self.keep)]:
            self._drop(job)

    def _drop(self, job: Job) -> None:
        del self._jobs[job.id]
        shutil.rmtree(job.clip.parent, ignore_errors=True)

    def expire(self) -> None:
        """Remove the results (and figures) of jobs done more than ``result_ttl_s`` ago."""
        now = time.monotonic()
        with self._lock:
            old = [j for j in self._jobs.values() if j.done_at is not None and now - j.done_at > self.result_ttl_s]
            for job in old:
                self._drop(job)

    def _sweep_loop(self) -> None:
        while not self._closed.wait(min(30.0, max(0.2, self.result_ttl_s / 4))):
            self.expire()

    def close(self) -> None:
        """Stop the running job (within a frame's decode) and drop the queued ones."""
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
