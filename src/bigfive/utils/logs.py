"""Logging set-up from a YAML dictConfig file with a level override."""

from __future__ import annotations

import logging
import logging.config
import sys
from pathlib import Path

import yaml

DEFAULT_LOG_CONFIG = Path(__file__).with_name("logging.yaml")


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when logging was set up.

    Notebooks and test runners swap ``sys.stderr``; a handler holding the old object would write to
    a closed stream ("I/O operation on closed file") once the swap is undone.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; the property always wins
        pass


def setup_logging(config_file: str | Path | None = None, level: str | None = None) -> None:
    path = Path(config_file) if config_file else DEFAULT_LOG_CONFIG
    with path.open() as f:
        config = yaml.safe_load(f)
    logging.config.dictConfig(config)
    if level:
        logging.getLogger("bigfive").setLevel(level.upper())
