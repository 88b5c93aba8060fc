"""The app's job queue (bigfive.app.jobs.JobQueue) on its own: what a cancel does to a waiting job's place.

The predictor here blocks until released, so that one job runs and the next waits; it keeps the
queue's contract (``predict(clip, ..., stop=...)`` returns a ClipPrediction and polls ``stop``).
"""

from __future__ import annotations

import threading

import pytest
from conftest import HANG_S

from bigfive.app.jobs import JobQueue, QueueFull
from bigfive.inference.results import ClipPrediction


class _Blocking:
    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, clip, *, stop, **_):
        while not self.release.wait(0.05):
            if stop():
                break
        return ClipPrediction(clip.name, status="error", error="stopped")


def _submit(queue: JobQueue):
    job_id, folder = queue.new_folder()
    clip = folder / "clip.mp4"
    clip.write_bytes(b"not decoded here")
    return queue.submit(job_id, "talk.mp4", clip)


def test_cancelling_a_waiting_job_frees_its_place_and_deletes_its_clip_at_once(tmp_path):
    predictor = _Blocking()
    queue = JobQueue(predictor, tmp_path, max_queue=2, job_timeout_s=HANG_S)
    try:
        running, waiting = _submit(queue), _submit(queue)
        with pytest.raises(QueueFull):
            queue.check_room()
        queue.cancel(waiting.id)
        assert waiting.finished and waiting.result.error == "cancelled" and not waiting.clip.exists()
        queue.check_room()  # the place is free while the first job still runs
        assert not running.finished
    finally:
        predictor.release.set()
        queue.close()
    assert running.finished and not running.clip.exists()
