"""The benchmark scripts run and print their JSON verdict last (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import math
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


def _quotient_bounds(num: float, den: float, half: float) -> tuple[float, float]:
    """The range of num / den when both were rounded to +-half before printing."""
    return (num - half) / (den + half), (num + half) / (den - half) if den > half else float("inf")


def test_train_throughput_benchmark_reports_loop_and_model_only_in_one_run():
    out = _last_json(["benchmarks/train_throughput.py", "--quick", "--device", "cpu"])
    assert out["quick"] is True and out["device"] == "cpu" and (out["T"], out["S"]) == (4, 32)
    assert out["model_only_steps"] == (out["epochs"] - 1) * -(-out["train_clips"] // out["batch_size"])
    for key in ("loop_clips_s", "model_only_clips_s", "loop_reported_clips_s", "ratio"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    # the headline is the loop / model-only quotient of the printed (3-decimal) values, itself at 4 decimals
    low, high = _quotient_bounds(out["loop_clips_s"], out["model_only_clips_s"], 0.0005)
    assert low - 0.00005 <= out["ratio"] <= high + 0.00005, out
    assert out["target_ratio"] == 0.85 and out["target_met"] == (out["ratio"] >= 0.85)
    det = out["deterministic"]
    assert det["default"] is True  # params.yaml's train.deterministic, which the headline uses
    assert set(det["model_only_clips_s"]) == {"on", "off", "on_nanfill"} and set(det["loop_clips_s"]) == {"on", "off"}
    assert (det["loop_clips_s"]["on"], det["model_only_clips_s"]["on"]) == (out["loop_clips_s"],
                                                                              out["model_only_clips_s"])
    for side, cost in (("loop", det["loop_cost"]), ("model_only", det["model_only_cost"])):
        speeds = det[f"{side}_clips_s"]
        assert all(math.isfinite(v) and v > 0 for v in speeds.values()), side
        low, high = _quotient_bounds(speeds["on"], speeds["off"], 0.0005)
        assert 1 - high - 0.00005 <= cost <= 1 - low + 0.00005, (side, det)
    # one round: every median is that round's value
    rounds = out["rounds_clips_s"]
    assert set(rounds) == {"model_on", "loop_on", "model_off", "loop_off", "model_on_nanfill"}
    assert rounds["loop_on"] == [out["loop_clips_s"]] and rounds["model_off"] == [det["model_only_clips_s"]["off"]]
    assert rounds["model_on_nanfill"] == [det["model_only_clips_s"]["on_nanfill"]]
