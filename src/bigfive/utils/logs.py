"""Logging set-up from a YAML dictConfig file with a level override."""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path

import yaml

DEFAULT_LOG_CONFIG = Path(__file__).with_name("logging.yaml")


def setup_logging(config_file: str | Path | None = None, level: str | None = None) -> None:
    path = Path(config_file) if config_file else DEFAULT_LOG_CONFIG
    with path.open() as f:
        config = yaml.safe_load(f)
    logging.config.dictConfig(config)
    if level:
        logging.getLogger("bigfive").setLevel(level.upper())
