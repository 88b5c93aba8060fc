"""Peak memory (RSS) of `bigfive predict` and of `bigfive app`'s server process on hostile clips (issue 26).

    PYTHONPATH=src python benchmarks/memory.py [--keep DIR]

Clips, made here with imageio-ffmpeg's FFmpeg (libx264): 16000x16000 (3 grey frames, ~750 KB: on the
code before the caps, 11.8 GB in predict and 12.3 GB in the app), 4096x4096 (at the default pixel cap:
the largest clip accepted), and a 160x120 talking-head clip as the reference. The model is a checkpoint
of the default model config with random weights (memory does not depend on them).

`bigfive predict` runs once per clip, each in a fresh process started from a small launcher that reads
the process's own peak from ``wait4`` (ru_maxrss; see tests/test_hostile_inputs.py for why a launcher).
The app runs once; each clip is uploaded in turn and the server's VmHWM (peak RSS so far) is read from
/proc after its result. The FFmpeg header probe runs in its own short-lived process (~30 MB) and is
not in these numbers. The last line is one JSON object: peaks in MB, the reference clip's peaks, the
ratio of the 16000x16000 peak to the reference, and whether every peak is under the 1500 MB target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 1500.0
LAUNCHER = ("import json, os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
            "err = p.stderr.read()\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print(json.dumps([usage.ru_maxrss, err.strip().splitlines()[-5:]]))\n")


def make_clips(d: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' clip makers
    from hostile_clips import flat_clip
    from synth_clips import write_clip

    return {"16000x16000": flat_clip(d / "huge.mp4", 16000, 16000),
            "4096x4096": flat_clip(d / "cap.mp4", 4096, 4096, fps=5, seconds=2),
            "160x120 (reference)": write_clip(d / "talk.mp4", frames=30)}


def predict_peak(model: Path, clip: Path) -> tuple[float, list[str]]:
    out = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "bigfive", "predict", str(clip),
                          "--model", str(model), "--no-progress", "--workers", "1"], capture_output=True, text=True,
                         check=True)
    kb, err = json.loads(out.stdout)
    return kb / 1024, [line for line in err if line.startswith(f"{clip}: ")]


def app_peaks(model: Path, clips: dict[str, Path], tmp: Path) -> dict[str, dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bigfive", "app", "--model", str(model), "--port", str(port)],
                            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc)
        out = {}
        for name, clip in clips.items():
            req = urllib.request.Request(f"{base}/api/upload?name={clip.name}", data=clip.read_bytes(), method="POST")
            with urllib.request.urlopen(req, timeout=600) as r:
                job = json.loads(r.read())["job"]
            view = _wait_job(base, job)
            out[name] = {"peak_mb": _hwm_mb(proc.pid), "result": view.get("error") or view.get("status")}
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _wait_up(base: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError("bigfive app exited")
        try:
            with urllib.request.urlopen(base + "/api/info", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("bigfive app did not come up")


def _wait_job(base: str, job: str) -> dict:
    while True:
        with urllib.request.urlopen(f"{base}/api/jobs/{job}", timeout=60) as r:
            view = json.loads(r.read())
        if view["stage"] == "done":
            return view
        time.sleep(0.2)


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from test_predict import make_checkpoint

    with tempfile.TemporaryDirectory(prefix="bigfive-memory-") as tmp:
        d = Path(tmp)
        model = make_checkpoint(d / "model.pt")
        clips = make_clips(d)
        predict = {}
        for name, clip in clips.items():
            peak, lines = predict_peak(model, clip)
            predict[name] = {"peak_mb": round(peak, 1), "result": lines[0][len(str(clip)) + 2:] if lines else "ok"}
            print(f"predict {name}: {peak:.0f} MB {predict[name]['result']}", file=sys.stderr)
        app = app_peaks(model, clips, d)
        for name, rec in app.items():
            rec["peak_mb"] = round(rec["peak_mb"], 1)
            print(f"app {name}: {rec['peak_mb']:.0f} MB (server peak so far) {rec['result']}", file=sys.stderr)
    ref = "160x120 (reference)"
    peaks = [r["peak_mb"] for r in (*predict.values(), *app.values())]
    print(json.dumps({"benchmark": "memory", "target_mb": TARGET_MB, "predict": predict, "app": app,
                      "huge_over_reference_predict": round(predict["16000x16000"]["peak_mb"] / predict[ref]["peak_mb"],
                                                           3),
                      "under_target": all(p < TARGET_MB for p in peaks)}))


if __name__ == "__main__":
    main()
