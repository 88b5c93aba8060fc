"""The benchmark scripts run and print their JSON verdict last (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import HANG_S, ROOT, clean_env


def _last_json(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                            timeout=HANG_S)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_preprocess_benchmark_measures_every_route_on_h264():
    out = _last_json(["benchmarks/preprocess.py", "--seconds", "1", "--repeats", "1", "--batch", "2",
                      "--naive-slice", "2"])
    assert out["clip"]["codec"] == "h264" and out["clip"]["frames"] == 30
    assert out["status"] == "ok"  # the face was found: the pipeline really ran
    assert out["decode_route"] in out["decode_s_by_route"] and set(out["decode_s_by_route"]) == {"default", "1"}
    for key in ("decode_fps", "pipeline_fps", "pipeline_single_fps", "naive_fps"):
        assert out[key] > 0, key
    # ratio_to_decode is pipeline_fps / decode_fps before rounding; the printed fps are rounded to 0.1, so
    # the ratio must lie within what those roundings allow (a fixed tolerance would depend on how fast
    # this machine decodes: at 5 fps, 0.05 fps of rounding alone moves the ratio by 0.01)
    p, d, half = out["pipeline_fps"], out["decode_fps"], 0.05
    low = (p - half) / (d + half)
    high = (p + half) / (d - half) if d > half else float("inf")
    assert low - 0.0005 <= out["ratio_to_decode"] <= high + 0.0005, (out["ratio_to_decode"], p, d)
    assert set(out["parts_s_per_clip"]) == {"read_s", "detect_s", "crop_s", "flow_s"}
    assert isinstance(out["target_met"], bool)
