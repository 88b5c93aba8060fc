"""Predictions queued for one worker thread, each with a stage the page polls to show progress.

One model, one clip at a time: MTCNN, the flow engine and the network are not shared between threads,
and two clips at once on a small CPU only make both slower. Each job keeps its clip and its figure in
its own folder under the app's work directory; the oldest finished jobs are removed beyond ``keep``.
"""

from __future__ import annotations

import shutil
import threading
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


@dataclass
class Job:
    id: str
    name: str  # the clip's file name as the user gave it
    clip: Path  # where it is stored for the predictor
    stage: str = "queued"
    result: ClipPrediction | None = None

    @property
    def figure(self) -> Path:
        return self.clip.parent / "explain.png"

    @property
    def finished(self) -> bool:
        return self.stage == "done"


class JobQueue:
    """Runs ``predictor.predict`` on submitted clips, one at a time, in submission order."""

    def __init__(self, predictor: Predictor, workdir: Path, keep: int = 32):
        self.predictor = predictor
        self.workdir = workdir
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigfive-predict")

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and the folder its clip is written to before :meth:`submit`."""
        job_id = uuid.uuid4().hex
        folder = self.workdir / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job_id: str, name: str, clip: Path) -> Job:
        job = Job(job_id, name, clip)
        with self._lock:
            self._jobs[job_id] = job
            self._evict()
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def waiting_before(self, job: Job) -> int:
        with self._lock:
            ahead = list(self._jobs.values())
        return sum(not j.finished for j in ahead[:ahead.index(job)]) if job in ahead else 0

    def _run(self, job: Job) -> None:
        def stage(name: str) -> None:
            job.stage = name

        job.result = self.predictor.predict(job.clip, explain_to=job.figure, stage=stage)
        job.stage = "done"

    def _evict(self) -> None:
        """Drop the oldest finished jobs (and their files) beyond ``keep``; unfinished ones stay."""
        finished = [j for j in self._jobs.values() if j.finished]
        for job in finished[:max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]
            shutil.rmtree(job.clip.parent, ignore_errors=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
