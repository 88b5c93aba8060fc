"""Interrupted runs: a killed ``sample`` or ``ingest`` leaves nothing that a later command accepts.

Each kill is a real SIGKILL of a subprocess at a chosen point (the function that would run next is
patched to kill its own process), so no ``finally`` or ``atexit`` gets to clean up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from test_hostile_inputs import annotation, minimal_downloads, run_measured

from bigfive.config import SampleConfig
from bigfive.data.chalearn import SAMPLE_COMPLETE, IngestError
from bigfive.data.ingest import ingest_downloads
from bigfive.utils.io import atomic_dir, remove_stale_temps

TINY = SampleConfig(n_train=3, n_val=2, n_test=2, seconds=1.0, fps=8, width=64, height=64, seed=2)
TINY_ARGS = "n_train=3, n_val=2, n_test=2, seconds=1.0, fps=8, width=64, height=64, seed=2"

KILL_SAMPLE_AFTER_TRAIN = f"""
import os, signal, sys
from bigfive.config import SampleConfig
from bigfive.data import sample as S
write = S.write_split_archive
def write_then_die(out_dir, split, *args, **kwargs):
    names = write(out_dir, split, *args, **kwargs)
    if split == "train":
        os.kill(os.getpid(), signal.SIGKILL)
    return names
S.write_split_archive = write_then_die
S.generate(SampleConfig({TINY_ARGS}), sys.argv[1], progress=False)
"""

KILL_INGEST_AFTER_FIRST_CLIP = """
import os, signal, sys
from bigfive.data import chalearn
from bigfive.data.ingest import ingest_downloads
copy = chalearn._copy_member
def copy_then_die(*args, **kwargs):
    copy(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
chalearn._copy_member = copy_then_die
ingest_downloads(sys.argv[1], sys.argv[2], show_progress=False)
"""


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def temps(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def sample_dl(tmp_path_factory) -> Path:
    from bigfive.data.sample import generate

    out = tmp_path_factory.mktemp("sample") / "dl"
    generate(TINY, out, progress=False)
    return out


def test_killed_sample_leaves_the_old_folder_and_the_next_run_cleans_up(tmp_path, sample_dl, caplog):
    out = tmp_path / "dl"
    shutil.copytree(sample_dl, out)
    before = tree(out)
    run = run_measured([sys.executable, "-c", KILL_SAMPLE_AFTER_TRAIN, str(out)])
    assert run.rc == -9, run.err[-2000:]
    assert tree(out) == before  # the finished sample is untouched: no half-written archive in it
    stale = temps(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".dl.") and stale[0].endswith(".tmp"), stale
    assert (tmp_path / stale[0] / "train-1.zip").is_file()  # the killed run got that far, in its own folder

    from bigfive.data.sample import generate

    with caplog.at_level("INFO", logger="bigfive.utils.io"):
        generate(TINY, out, progress=False)
    assert f"removed stale temporary folder {tmp_path / stale[0]}" in caplog.text
    assert temps(tmp_path) == []
    assert tree(out) == before  # same seed, same bytes


def test_sample_killed_before_its_first_run_finished_leaves_nothing_to_ingest(tmp_path):
    out = tmp_path / "dl"
    run = run_measured([sys.executable, "-c", KILL_SAMPLE_AFTER_TRAIN, str(out)])
    assert run.rc == -9, run.err[-2000:]
    assert not out.exists()
    with pytest.raises(IngestError, match="downloads directory not found"):
        ingest_downloads(out, tmp_path / "raw", show_progress=False)


def test_sample_folder_without_marker_or_with_a_missing_archive_is_refused(tmp_path, sample_dl):
    dl = tmp_path / "dl"
    shutil.copytree(sample_dl, dl)
    marker = json.loads((dl / SAMPLE_COMPLETE).read_text())
    assert set(marker["files"]) == {p.name for p in dl.iterdir()} - {SAMPLE_COMPLETE}

    (dl / "test-1e.zip").unlink()
    with pytest.raises(IngestError, match=r"dl: test-1e\.zip: missing, though sample_complete\.json lists it .*"
                                          r"pass --partial"):
        ingest_downloads(dl, tmp_path / "raw", show_progress=False)
    shutil.copy(sample_dl / "test-1e.zip", dl / "test-1e.zip")
    data = (dl / "val-1.zip").read_bytes()
    (dl / "val-1.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=r"val-1\.zip: \d+ bytes, sample_complete\.json says \d+ \(truncated\?\)"):
        ingest_downloads(dl, tmp_path / "raw", show_progress=False)
    shutil.copy(sample_dl / "val-1.zip", dl / "val-1.zip")

    (dl / SAMPLE_COMPLETE).unlink()  # what an interrupted sample of an older version left
    with pytest.raises(IngestError, match=r"sample_complete\.json: missing or unreadable: `bigfive sample` did not "
                                          r"finish"):
        ingest_downloads(dl, tmp_path / "raw", show_progress=False)
    assert not (tmp_path / "raw").exists()
    report = ingest_downloads(dl, tmp_path / "raw", show_progress=False, partial=True)
    assert report["partial"] is True and any("--partial: ingested anyway" in w for w in report["warnings"])
    assert SAMPLE_COMPLETE not in {p.name for p in (tmp_path / "raw").iterdir()}  # never copied


def test_sample_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    from bigfive.data.sample import generate

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="thesis.tex, which `bigfive sample` does not write"):
        generate(TINY, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_download_with_a_split_missing_is_refused_unless_partial(tmp_path):
    dl = minimal_downloads(tmp_path / "dl")
    (dl / "annotation_test.pkl").unlink()
    with pytest.raises(IngestError, match=r"dl: test: no annotation pickle labels any clip of this split .*"
                                          r"pass --partial"):
        ingest_downloads(dl, tmp_path / "raw", show_progress=False)
    report = ingest_downloads(dl, tmp_path / "raw", show_progress=False, partial=True)
    assert report["counts"] == {"train": 1, "val": 1, "test": 0}
    assert any("test: split is empty" in w for w in report["warnings"])


def test_killed_ingest_leaves_the_old_output_and_the_next_run_cleans_up(tmp_path, caplog):
    dl = minimal_downloads(tmp_path / "dl")
    out = tmp_path / "data" / "raw"
    ingest_downloads(dl, out, show_progress=False)
    before = tree(out)
    (dl / "annotation_training.pkl").write_bytes(__import__("pickle").dumps(annotation(["AAAAAAAAAAA.001"], 0.25)))
    run = run_measured([sys.executable, "-c", KILL_INGEST_AFTER_FIRST_CLIP, str(dl), str(out)])
    assert run.rc == -9, run.err[-2000:]
    assert tree(out) == before
    stale = temps(out.parent)
    assert len(stale) == 1 and stale[0].startswith(".raw."), stale
    legacy = out.parent / ".raw.k2j4_x9q.tmp"  # what main's mkdtemp named it
    legacy.mkdir()
    with caplog.at_level("INFO", logger="bigfive.utils.io"):
        ingest_downloads(dl, out, show_progress=False)
    assert caplog.text.count("removed stale temporary folder") == 2
    assert temps(out.parent) == []
    assert tree(out) != before  # the new labels


def test_temp_folders_of_live_runs_and_other_hosts_are_kept(tmp_path):
    target = tmp_path / "out"
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:32]
    mine = tmp_path / f".out.{os.getpid()}-0123abcd-{host}.tmp"
    other_host = tmp_path / ".out.1-0123abcd-someotherhost.tmp"
    dead = tmp_path / f".out.{2**22 + 12345}-0123abcd-{host}.tmp"  # above any pid_max: never running
    unrelated = tmp_path / ".outer.1-0123abcd-x.tmp"
    for d in (mine, other_host, dead, unrelated):
        d.mkdir()
    assert remove_stale_temps(target) == [dead]
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    assert {p.name for p in tmp_path.iterdir()} == {"out", mine.name, other_host.name, unrelated.name}
