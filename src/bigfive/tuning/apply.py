"""``bigfive tune --apply best_params.yaml``: merge the tuned keys into params.yaml, keeping its comments."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from bigfive.config import ConfigError, flatten, params_from_dict
from bigfive.config.base import load_yaml, parse_yaml
from bigfive.config.tune import SEARCHABLE
from bigfive.utils.io import write_text

log = logging.getLogger(__name__)


def read_best(path: Path) -> dict[str, Any]:
    """The dotted overrides in a best_params.yaml; errors name the file and the bad entry."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: best params file not found (run `bigfive tune` first)")
    data = load_yaml(path)  # the reader params.yaml gets: size cap, duplicate keys refused, one-line errors
    if not data:
        raise ConfigError(str(path), "holds no parameters (no trial of the study has completed)")
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping with model:/train: sections, got {type(data).__name__}")
    for section, values in data.items():
        if section not in SEARCHABLE or not isinstance(values, dict):
            raise ConfigError(f"{path}: {section}", f"expected one of the sections {', '.join(SEARCHABLE)} "
                                                    f"holding key: value pairs")
    return flatten(data)


def apply_best(best_file: Path, params_file: Path) -> dict[str, tuple[Any, Any]]:
    """Write the best values into ``params_file``; returns ``{key: (old, new)}`` of what changed."""
    from ruamel.yaml import YAML  # round-trip YAML: params.yaml keeps its comments and layout

    overrides = read_best(best_file)
    load_yaml(params_file)  # refuse a params file the other commands would refuse, before round-tripping it
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(params_file.read_text())
    changes: dict[str, tuple[Any, Any]] = {}
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        node = doc.setdefault(section, {})
        old = node.get(name)
        if old != value:
            changes[key] = (old, value)
        node[name] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    text = buf.getvalue()
    try:  # validate the merged file before it replaces the old one
        params_from_dict(parse_yaml(text, str(params_file)))
    except ConfigError as err:
        raise ConfigError(err.key, f"{err.reason} (after applying {best_file} to {params_file})") from None
    write_text(params_file, text)
    return changes
