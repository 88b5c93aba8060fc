"""What each preprocessing stage's outputs depend on, declared once: its params and its code.

The faces and flow stages keep their outputs between runs (``persist`` in dvc.yaml) and skip the
clips already done. A clip counts as done only when it was made under the same *key*: the values
of the stage's declared params and a hash of its declared source files, those of the stages it
reads included. dvc.yaml lists the same params and code deps (tests/test_stage_keys.py checks it),
so whenever DVC reruns a stage because a param or its code changed, the stage redoes every clip
instead of keeping outputs the old settings made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bigfive
from bigfive.config import Params, to_dict

# The package's folder: src/bigfive in a checkout, site-packages/bigfive when installed. Code deps are
# declared as dvc.yaml names them (src/bigfive/...) and read from here, so an installed copy keys too.
PACKAGE = Path(bigfive.__file__).resolve().parent
SOURCE_PREFIX = "src/bigfive/"


@dataclass(frozen=True)
class StageInputs:
    """A stage's own params (dotted keys; a section stands for all its keys) and code (repository paths),
    and the stages whose outputs it reads: their inputs are its inputs too. ``checks`` are params the
    stage reads that decide only its exit status, never an output: DVC reruns on them, no clip is redone."""

    params: tuple[str, ...]
    code: tuple[str, ...]
    upstream: tuple[StageInputs, ...] = ()
    checks: tuple[str, ...] = ()

    def key_params(self) -> tuple[str, ...]:
        """What the outputs depend on: the key."""
        return _without_covered([*(k for up in self.upstream for k in up.key_params()), *self.params])

    def all_params(self) -> tuple[str, ...]:
        """What dvc.yaml's ``params:`` lists: the key's params and the checks."""
        keys = [*(k for up in self.upstream for k in up.all_params()), *self.params, *self.checks]
        return _without_covered(keys)

    def all_code(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*(p for up in self.upstream for p in up.all_code()), *self.code]))


def _without_covered(keys: list[str]) -> tuple[str, ...]:
    """Unique keys in first-seen order, minus those inside a listed section (preprocess.flow.stack
    when preprocess.flow is listed): what dvc.yaml's ``params:`` needs to name."""
    unique = list(dict.fromkeys(keys))
    return tuple(k for k in unique if not any(k.startswith(other + ".") for other in unique))


FACES = StageInputs(
    params=("seed", "data.raw_dir", "preprocess.faces_dir", "preprocess.frames", "preprocess.sampling",
            "preprocess.crop_size", "preprocess.margin", "preprocess.detect_width", "preprocess.min_face_size",
            "preprocess.coarse_frames", "preprocess.roi_face_size", "preprocess.roi_pad",
            "preprocess.roi_pnet_threshold", "preprocess.box_smoothing", "preprocess.max_missing_share",
            "preprocess.flow.stack",
            # the input caps decide which clips are refused and how large frames are shrunk as read
            "preprocess.max_frame_pixels", "preprocess.max_duration_s", "preprocess.max_decode_pixels",
            "preprocess.shrink_pixels"),
    code=("src/bigfive/preprocess", "src/bigfive/data/video.py", "src/bigfive/data/container.py",
          "src/bigfive/config/preprocess.py"),
    checks=("preprocess.max_failed_share",),
)
FLOW = StageInputs(
    params=("preprocess.flow_dir", "preprocess.flow"),
    code=("src/bigfive/preprocess", "src/bigfive/config/preprocess.py"),
    upstream=(FACES,),
    checks=("preprocess.max_failed_share",),
)
FEATURES = StageInputs(params=("preprocess.features_dir",), code=("src/bigfive/preprocess",), upstream=(FACES, FLOW))
STAGES = {"faces": FACES, "flow": FLOW, "features": FEATURES}


def param_value(params: Params, key: str) -> Any:
    node: Any = params
    for name in key.split("."):
        node = getattr(node, name)
    return to_dict(node)


def param_values(params: Params, stage: StageInputs) -> dict[str, Any]:
    values = {key: param_value(params, key) for key in stage.key_params()}
    if "seed" in values and params.preprocess.sampling != "random":
        values["seed"] = None  # the seed draws only random sampling's jitter: centre sampling never reads it
    return values


def source_path(path: str) -> Path:
    if not path.startswith(SOURCE_PREFIX):
        raise ValueError(f"code dep {path!r} is not under {SOURCE_PREFIX}")
    found = PACKAGE / path[len(SOURCE_PREFIX):]
    if not found.exists():
        raise FileNotFoundError(f"code dep {path} not found at {found}")
    return found


def code_hash(paths: tuple[str, ...]) -> str:
    """SHA-256 over the names and bytes of every file under ``paths``: the files DVC hashes for these
    deps (.dvcignore leaves out __pycache__)."""
    digest = hashlib.sha256()
    for path in paths:
        root = source_path(path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                     if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            name = path if f == root else f"{path}/{f.relative_to(root).as_posix()}"
            digest.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def stage_key(params: Params, stage: StageInputs) -> str:
    """The key a stage stamps on each output and compares before it skips one (a JSON string)."""
    return json.dumps({"params": param_values(params, stage), "code": code_hash(stage.all_code())}, sort_keys=True)
