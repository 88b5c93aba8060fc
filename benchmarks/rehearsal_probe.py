"""Fixed and per-step costs for the rehearsal's projection.

    python benchmarks/rehearsal_probe.py faces|flow PARAMS        # one pool worker's start-up
    python benchmarks/rehearsal_probe.py parts PARAMS OUT.json    # CPU-s per clip of each step

``faces``/``flow``: the start-up a worker pays once (imports, MTCNN load), run under
``benchmarks/rehearsal.py measure``; the report subtracts it from a stage's CPU time before
projecting per clip (at N = 16 it is a large share; at 10,000 clips it is not).

``parts``: on up to ``PARTS_CLIPS`` of the rehearsal's raw clips, in one process with one thread each
for torch, OpenCV and FFmpeg (as a pool worker runs), the CPU-seconds (``time.process_time``, so
other jobs on the machine do not count) of decode, face detection, crops, the npz write and flow.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


PARTS_CLIPS = 4


def parts(params: Any) -> dict[str, Any]:
    """Median CPU-seconds per clip of each step of the faces + flow path (the code the stages run)."""
    import numpy as np

    from bigfive.preprocess.clip import decode_clip, extract_faces, make_detector
    from bigfive.preprocess.flow import FlowEngine
    from bigfive.preprocess.pool import manifest_items
    from bigfive.utils.io import save_npz

    cfg = params.preprocess
    detector, engine = make_detector(cfg), FlowEngine(cfg.flow)
    steps: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "crops", "save_npz", "flow")}
    sizes = []
    for item in manifest_items(params.data.raw_dir)[:PARTS_CLIPS]:
        c0 = time.process_time()
        clip = decode_clip(item.path, cfg, seed=params.seed, video_id=item.video_id)
        c1 = time.process_time()
        detector.detect_clip([clip.images[int(i)] for i in clip.idx], bgr=True)
        c2 = time.process_time()
        faces = extract_faces(item.path, cfg, detector, seed=params.seed, video_id=item.video_id, decoded=clip)
        c3 = time.process_time()
        if faces.status != "ok":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            save_npz(Path(tmp) / "x.npz", crops=faces.crops, flow_frames=faces.flow_frames, boxes=faces.boxes)
        c4 = time.process_time()
        engine.clip(faces.flow_frames)
        c5 = time.process_time()
        steps["decode"].append(c1 - c0)
        steps["detect"].append(c2 - c1)
        steps["crops"].append(max(0.0, (c3 - c2) - (c2 - c1)))  # extract_faces = detection again + crops
        steps["save_npz"].append(c4 - c3)
        steps["flow"].append(c5 - c4)
        sizes.append(f"{clip.info.width}x{clip.info.height}")
    return {"clips": len(sizes), "sizes": sizes,
            "cpu_s_per_clip": {k: round(float(np.median(v)), 4) if v else None for k, v in steps.items()}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["parts"]:
        from bigfive.config import load_params
        from bigfive.preprocess.pool import _init
        from bigfive.utils.io import write_json

        _init(None, ())  # one thread each for torch, OpenCV and FFmpeg, as in a pool worker
        params = load_params(argv[1])
        result = parts(params)
        write_json(argv[2], result)
        print(json.dumps(result))
        return 0
    stage, params_file = argv
    from bigfive.config import load_params
    from bigfive.preprocess.pool import _init

    params = load_params(params_file)
    if stage == "faces":
        from bigfive.preprocess.faces import _worker_state

        _init(_worker_state, (params.preprocess, params.seed))
    elif stage == "flow":
        from bigfive.preprocess.flow import _make_engine

        _init(_make_engine, (params.preprocess.flow,))
    else:
        raise SystemExit(f"unknown stage {stage!r} (faces | flow)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
