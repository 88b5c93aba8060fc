"""Real-size rehearsal: compose its params, and run one pipeline stage while measuring what it costs.

    dvc repro pipelines/rehearsal/dvc.yaml                       # the whole rehearsal (docs/real_data.md)
    python benchmarks/rehearsal.py compose                       # -> <rehearsal.dir>/params.yaml
    python benchmarks/rehearsal.py measure faces -- bigfive faces --params data/rehearsal/params.yaml
    python benchmarks/rehearsal_report.py                        # -> results/rehearsal/report.{json,md}

``compose`` layers params.yaml, configs/chalearn.yaml (the recommended real-data configuration) and
pipelines/rehearsal/params.yaml's ``overrides``, points every folder under ``rehearsal.dir``, sets the
sample to its ``chalearn`` preset (N clips) and saves a random InceptionResnetV1 state dict as the
"pretrained" weights file, with its SHA-256 in ``model.static_weights_sha256`` (so the hash check runs).

``measure STAGE -- CMD`` runs CMD and writes ``<rehearsal.dir>/measure/STAGE.json``: wall seconds,
CPU seconds of CMD and every process under it (``RUSAGE_CHILDREN``: worker pools and ffmpeg
included, since each is waited for), the peak RSS of each of those processes (sampled with psutil),
and the bytes of the ``--outputs`` folders. CPU-seconds are what projects to a machine of its own:
other jobs sharing the cores stretch the wall clock, not the CPU time. It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bigfive.config import apply_overrides, flatten, params_from_dict  # noqa: E402
from bigfive.config.base import load_yaml  # noqa: E402
from bigfive.utils.io import write_json, write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REHEARSAL_PARAMS = Path("pipelines/rehearsal/params.yaml")
CHALEARN = Path("configs/chalearn.yaml")
SAMPLE_INTERVAL_S = 0.2


def rehearsal_settings(path: Path = REHEARSAL_PARAMS) -> tuple[dict[str, Any], dict[str, Any]]:
    data = load_yaml(path) or {}
    return data.get("rehearsal", {}), data.get("overrides", {}) or {}


def random_weights(path: Path, seed: int = 0) -> str:
    """A random InceptionResnetV1 state dict (with VGGFace2's 8631-class logits) saved to ``path``; its SHA-256."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    from bigfive.models.static import file_sha256
    from bigfive.utils.io import atomic_path

    torch.manual_seed(seed)
    state = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return file_sha256(path)


def compose(root_params: Path, chalearn: Path, rehearsal: Path) -> dict[str, Any]:
    """The rehearsal's params as a plain dict (validated), weights file written."""
    from bigfive.data.sample import PRESETS

    settings, overrides = rehearsal_settings(rehearsal)
    n, held = int(settings["clips"]), int(settings["held_out"])
    if n - 2 * held < 1:
        raise ValueError(f"{rehearsal}: rehearsal.clips {n} leaves no training clip after 2 x held_out {held}")
    base = Path(settings["dir"])
    data = load_yaml(root_params) or {}
    data = apply_overrides(data, flatten(load_yaml(chalearn) or {}))
    data = apply_overrides(data, dict(overrides))
    weights = base / "weights" / "random_inception_resnet_v1.pt"
    placed = {
        "data.raw_dir": str(base / "raw"),
        "sample.downloads_dir": str(base / "downloads"),
        **{f"sample.{k}": v for k, v in PRESETS["chalearn"].items()},
        "sample.n_train": n - 2 * held, "sample.n_val": held, "sample.n_test": held,
        "preprocess.faces_dir": str(base / "faces"),
        "preprocess.flow_dir": str(base / "flow"),
        "preprocess.features_dir": str(base / "features"),
        "train.models_dir": str(base / "models"),
        "evaluate.results_dir": str(base / "results"),
        "tracking.uri": f"sqlite:///{base / 'mlflow.db'}",
    }
    data = apply_overrides(data, placed)
    if data["model"].get("static_weights") is not None:  # stand-in for the VGGFace2 file, hash checked like it
        data = apply_overrides(data, {"model.static_weights": str(weights),
                                      "model.static_weights_sha256": random_weights(weights)})
    params_from_dict(data)  # the composed file must load like any params file
    return data


def _tree(proc: Any) -> list[Any]:
    import psutil

    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; wall and CPU seconds of its whole process tree, the peak RSS of each process in it."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    popen = subprocess.Popen(cmd)
    peaks: dict[int, tuple[str, int]] = {}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(popen.pid)
        while not done.is_set():
            for p in _tree(root):
                try:
                    rss = p.memory_info().rss
                    name = "main" if p.pid == popen.pid else p.name()
                except psutil.Error:
                    continue
                peaks[p.pid] = (name, max(rss, peaks.get(p.pid, ("", 0))[1]))
            done.wait(SAMPLE_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = popen.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    main = [rss for pid, (_, rss) in peaks.items() if pid == popen.pid]
    others = sorted(((name, rss) for pid, (name, rss) in peaks.items() if pid != popen.pid), key=lambda x: -x[1])
    return {
        "cmd": cmd, "returncode": code, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "peak_rss_mb_main": round(max(main, default=0) / 2**20, 1),
        "peak_rss_mb_children": [{"name": name, "mb": round(rss / 2**20, 1)} for name, rss in others],
    }


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="action", required=True)
    c = sub.add_parser("compose", help="write the rehearsal's params file")
    c.add_argument("--params", type=Path, default=Path("params.yaml"))
    c.add_argument("--chalearn", type=Path, default=CHALEARN)
    c.add_argument("--rehearsal", type=Path, default=REHEARSAL_PARAMS)
    m = sub.add_parser("measure", help="run one stage's command and record its cost")
    m.add_argument("stage")
    m.add_argument("--outputs", nargs="*", type=Path, default=[], help="folders the stage writes (bytes)")
    m.add_argument("cmd", nargs="*", help="-- then the command")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)  # everything after -- is the command, verbatim
    args = ap.parse_args(argv[:cut])
    args.cmd = argv[cut + 1:]
    os.chdir(ROOT)
    settings, _ = rehearsal_settings()
    base = Path(settings["dir"])
    if args.action == "compose":
        data = compose(args.params, args.chalearn, args.rehearsal)
        import yaml

        out = base / "params.yaml"
        write_text(out, "# composed by benchmarks/rehearsal.py compose; do not edit\n"
                   + yaml.safe_dump(data, sort_keys=False))
        print(json.dumps({"params": str(out), "clips": int(settings["clips"])}))
        return 0
    if not args.cmd:
        ap.error("measure needs a command after --")
    record = {"stage": args.stage, **run_measured(args.cmd)}
    record["bytes"] = {str(p): folder_bytes(p) for p in args.outputs if p.exists()}
    record["load_average"] = list(os.getloadavg())
    record["cpu_count"] = os.cpu_count()
    write_json(base / "measure" / f"{args.stage}.json", record)
    print(json.dumps(record))
    if record["returncode"] != 0:
        print(f"rehearsal: stage {args.stage} failed with exit code {record['returncode']}", file=sys.stderr)
    return int(record["returncode"])


if __name__ == "__main__":
    raise SystemExit(main())
