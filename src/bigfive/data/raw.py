"""``bigfive raw``, the first DVC stage: the sample or the ChaLearn downloads -> ``data.raw_dir``.

``data.source: sample`` generates the embedded sample in the ChaLearn download layout
(``sample.downloads_dir``) and ingests it exactly like the real data; ``data.source: chalearn``
ingests ``data.chalearn_dir``. The val/test password is read from the environment variable named
by ``data.password_env`` (only its name is a parameter). See :mod:`bigfive.data.ingest`.
"""

from __future__ import annotations

import argparse
import logging

from bigfive.data.ingest import ingest_downloads, resolve_password

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params

    params = load_params(args.params)
    data = params.data
    if data.source == "sample":
        from bigfive.data.sample import generate

        downloads = params.sample.downloads_dir
        log.info("generating the sample into %s", downloads)
        generate(params.sample, downloads, progress=not args.no_progress)
    else:
        downloads = data.chalearn_dir
    ingest_downloads(
        downloads, data.raw_dir,
        split=data.split,
        seed=params.seed,
        password=resolve_password(data.password_env),
        password_hint=f"set the environment variable {data.password_env} (data.password_env)",
        strict=data.strict,
        show_progress=not args.no_progress,
    )
    return 0
