"""Hostile downloads: each small crafted input ends in seconds, in bounded memory, with a one-line error.

The end-to-end cases run ``bigfive ingest`` in a subprocess (a crash would kill pytest otherwise)
and read that process's own peak memory from ``os.wait4`` (in a small launcher: see ``LAUNCHER``);
a generous timeout only stops a hang.
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import HANG_S  # only a hang reaches it (machines are shared and slow)

from bigfive import ALL_LABELS
from bigfive.data import chalearn
from bigfive.data.chalearn import IngestError, load_pickle, parse_annotations
from bigfive.data.limits import BoundedReader, IngestLimits, LimitError, check_structure, scan_pickle

ROOT = Path(__file__).resolve().parents[1]
PEAK_MB = 500  # the bound for `ingest` on any input under 10 MB
ADDRESS_SPACE = 3 << 30  # a runaway child fails with MemoryError instead of starving the machine


# --------------------------------------------------------------------------------------------- helpers


@dataclass
class Run:
    rc: int  # exit status, or -signal
    out: str
    err: str
    peak_mb: float  # the child's own ru_maxrss
    cpu_s: float  # its user + system CPU time (wall time on a shared machine says little)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("bigfive ")]


def _limit_child() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    os.nice(19)


# The command runs under this small launcher, which reports its child's peak memory. Why not wait4 on
# the command directly: on Linux a child's ru_maxrss starts from its parent's resident size at fork
# (the high-water mark survives exec), so a pytest process that has grown to 750 MB would be
# charged to every command it starts. Forked from the launcher (~10 MB), the command's own peak shows.
LAUNCHER = r"""
import os, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}")
if os.WIFSIGNALED(status):  # die of the same signal (SIGKILL and SIGSTOP cannot have handlers)
    sig = os.WTERMSIG(status)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], *, timeout: float = HANG_S, cwd: Path | None = None) -> Run:
    """Run ``args``; return its exit status, output and peak resident memory (``wait4`` in a small launcher)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONFAULTHANDLER": ""}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as tmp:
        usage_file = Path(tmp) / "usage"
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage_file), *map(str, args)], stdout=out,
                                stderr=err, cwd=cwd, env=env, preexec_fn=_limit_child, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"{' '.join(map(str, args))}: still running after {timeout} s (hang?)") from None
        out.seek(0)
        err.seek(0)
        maxrss_kb, cpu_s = (float(v) for v in usage_file.read_text().split())
        return Run(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   maxrss_kb / 1024, cpu_s)


def cli(*args: str, cwd: Path | None = None) -> Run:
    return run_measured([sys.executable, "-m", "bigfive", *args], cwd=cwd)


def assert_one_line_error(run: Run, *needles: str, command: str = "ingest") -> str:
    """Exit 1, no traceback, exactly one error line, naming everything in ``needles``; bounded memory."""
    assert run.rc == 1, f"exit {run.rc}\n{run.err[-3000:]}"
    assert "Traceback" not in run.err, run.err[-3000:]
    lines = run.error_lines
    assert len(lines) == 1 and lines[0].startswith(f"bigfive {command}: "), run.err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert len(lines[0]) < 2100
    assert run.peak_mb < PEAK_MB, f"peak {run.peak_mb:.0f} MB"
    return lines[0]


def annotation(clips: list[str], value: float = 0.5) -> dict[str, dict[str, float]]:
    return {t: {f"{c}.mp4": value for c in clips} for t in ALL_LABELS}


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def minimal_downloads(root: Path, clips: dict[str, bytes] | None = None, *, zip_name: str = "clips.zip",
                      compression: int = zipfile.ZIP_STORED) -> Path:
    """One labelled clip per split (labels loose), the clips in one zip; ``clips`` overrides members."""
    root.mkdir(parents=True, exist_ok=True)
    ids = {"train": "AAAAAAAAAAA.001", "val": "BBBBBBBBBBB.001", "test": "CCCCCCCCCCC.001"}
    names = {"train": "annotation_training.pkl", "val": "annotation_validation.pkl", "test": "annotation_test.pkl"}
    for split, vid in ids.items():
        (root / names[split]).write_bytes(pickle.dumps(annotation([vid]), protocol=2))
    members = {f"{vid}.mp4": os.urandom(2048) for vid in ids.values()} if clips is None else clips
    (root / zip_name).write_bytes(zip_bytes(members, compression))
    return root


def deep_tuple_key(depth: int) -> bytes:
    """``{((...(None,)...),): 0.0}``: hashing the key recurses ``depth`` levels in C."""
    return b"\x80\x02}N" + b"\x85" * depth + b"G" + b"\x00" * 8 + b"s."


def shared_references(levels: int = 9, fan: int = 10) -> bytes:
    """A label value that is a list of ``fan`` references to a list of ``fan`` references ... (fan**levels)."""
    out = bytearray(b"\x80\x02}X\x08\x00\x00\x00openness}X\x0f\x00\x00\x00AAAAAAAAAAA.001")
    out += b"](" + b"N" * fan + b"eq\x00"
    for i in range(1, levels):
        out += b"0](" + (b"h" + bytes([i - 1])) * fan + b"eq" + bytes([i])
    return bytes(out + b"ss.")


def colliding_int_keys(n: int) -> bytes:
    """A dict whose ``n`` int keys all hash to 0: inserting them is quadratic."""
    out = bytearray(b"\x80\x02}(")
    for i in range(n):
        v = i * (2**61 - 1)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        out += b"\x8a" + bytes([len(raw)]) + raw + b"N"
    return bytes(out + b"u.")


# --------------------------------------------------------------------------------------------- crash


def test_deep_tuple_key_pickle_is_refused_before_the_c_unpickler(tmp_path):
    data = deep_tuple_key(1_000_000)  # ~1 MB: a segfault on main
    assert len(data) < 10 << 20
    with pytest.raises(IngestError, match=r"^x\.pkl: pickle: refused: nested deeper than 32 levels "
                                          r"\(limit max_pickle_depth"):
        load_pickle(data, "x.pkl")
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "annotation_training.pkl").write_bytes(data)
    run = cli("ingest", str(dl), "--out", str(tmp_path / "raw"), "--no-progress", "--params", str(tmp_path / "no"))
    assert_one_line_error(run, "annotation_training.pkl: pickle: refused: nested deeper than 32 levels")
    assert not (tmp_path / "raw").exists()


def test_pickle_memo_index_and_colliding_keys_refused():
    with pytest.raises(IngestError, match=r"memo index 2147483648 out of order"):
        load_pickle(b"\x80\x02Nr\x00\x00\x00\x80.", "m.pkl")  # would make the C memo 16 GB
    with pytest.raises(IngestError, match=r"dict key or set item is not a string"):
        load_pickle(colliding_int_keys(50_000), "c.pkl")  # a hang on main
    with pytest.raises(IngestError, match=r"more than 100 objects \(limit max_pickle_nodes\)"):
        load_pickle(pickle.dumps(list(range(200)), protocol=2), "n.pkl", IngestLimits(max_pickle_nodes=100))


# --------------------------------------------------------------------------------------------- expansion


def test_shared_reference_pickle_is_refused_without_expanding(tmp_path):
    data = shared_references()  # 10**9 leaves in ~260 bytes: a 500 MB message on main
    assert len(data) < 300
    with pytest.raises(IngestError, match=r"more than 1000000 values, shared references expanded"):
        load_pickle(data, "x.pkl")
    # Even a structure under the node budget never reaches a message whole.
    small = pickle.loads(shared_references(levels=3))
    with pytest.raises(IngestError) as info:
        parse_annotations(small, "y.pkl")
    assert len(str(info.value)) < 300
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "annotation_validation.pkl").write_bytes(data)
    run = cli("ingest", str(dl), "--out", str(tmp_path / "raw"), "--no-progress", "--params", str(tmp_path / "no"))
    assert_one_line_error(run, "annotation_validation.pkl: pickle: refused: more than 1000000 values")


def test_check_structure_counts_cycles_and_depth():
    loop: list = []
    loop.append(loop)
    with pytest.raises(LimitError, match="nested deeper"):
        check_structure(loop)
    with pytest.raises(LimitError, match="more than 50 values"):
        check_structure([[1] * 10] * 10, IngestLimits(max_pickle_nodes=50))
    check_structure(annotation([f"A{i:010d}.001" for i in range(1000)]))


# --------------------------------------------------------------------------------------------- unpickler state


def test_build_on_an_allowed_global_cannot_change_the_next_load():
    planted = struct.pack("<d", float("inf"))
    # GLOBAL numpy.core.multiarray.scalar; BUILD (None, {"__defaults__": (planted,)}): sets the function's
    # default data on main, so that a later `scalar(dtype)` reads the planted value.
    crafted = (b"\x80\x02cnumpy.core.multiarray\nscalar\nN}X\x0c\x00\x00\x00__defaults__C\x08" + planted
               + b"\x85s\x86b.")
    with pytest.raises(IngestError, match="not a readable pickle"):
        load_pickle(crafted, "a.pkl")
    with pytest.raises(IngestError, match="not a readable pickle"):  # a BUILD with a plain dict state
        load_pickle(b"\x80\x02c_codecs\nencode\n}X\x01\x00\x00\x00xK\x01sb.", "b.pkl")
    assert chalearn._safe_numpy_scalar.__defaults__ == (b"",)
    assert not hasattr(chalearn._safe_latin1_encode, "x")
    u1 = chalearn.RestrictedUnpickler(io.BytesIO(b"."))
    u2 = chalearn.RestrictedUnpickler(io.BytesIO(b"."))
    assert u1.find_class("numpy", "dtype") is not u2.find_class("numpy", "dtype")  # fresh stand-ins per load
    import numpy as np

    assert load_pickle(pickle.dumps(np.float64(0.25), protocol=2), "c.pkl") == 0.25


# --------------------------------------------------------------------------------------------- decompression


def test_demographics_zip_bomb_is_refused_from_its_header(tmp_path):
    dl = minimal_downloads(tmp_path / "dl")
    line = b"AAAAAAAAAAA.001.mp4;AAAAAAAAAAA;1;1\n"
    bomb = b"VideoName;YouTubeID;Ethnicity;Gender\n" + line * (40 << 20 >> 5)  # ~45 MB of text
    (dl / "demo.zip").write_bytes(zip_bytes({"eth_gender_annotations_dev.csv": bomb}, zipfile.ZIP_DEFLATED))
    del bomb
    assert (dl / "demo.zip").stat().st_size < 1 << 20
    run = cli("ingest", str(dl), "--out", str(tmp_path / "raw"), "--no-progress", "--params", str(tmp_path / "no"))
    assert_one_line_error(run, "demo.zip: eth_gender_annotations_dev.csv: ", "limit max_")


def test_bounded_reader_stops_at_the_cap_whatever_the_header_says():
    reader = BoundedReader(io.BytesIO(b"x" * 5000), 4096, "larger than 4 KiB (limit test)")
    with pytest.raises(LimitError, match=r"limit test"):
        reader.read()
    assert reader.count == 4097  # one byte past the cap, never the rest


def test_clip_zip_bomb_and_member_cap(tmp_path):
    dl = minimal_downloads(tmp_path / "dl", {"AAAAAAAAAAA.001.mp4": bytes(20 << 20)},  # 20 MB of zeros
                           compression=zipfile.ZIP_DEFLATED)
    assert (dl / "clips.zip").stat().st_size < 100 << 10
    with pytest.raises(IngestError, match=r"^clips\.zip: AAAAAAAAAAA\.001\.mp4: inflates more than 100 times its "
                                          r"compressed size .*limit max_ratio"):
        chalearn_ingest(dl, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    # A clip of legitimate ratio but over max_member_bytes: refused too (the CLI sets the limit).
    dl2 = minimal_downloads(tmp_path / "dl2", {"AAAAAAAAAAA.001.mp4": os.urandom(3 << 20),
                                               "BBBBBBBBBBB.001.mp4": b"v", "CCCCCCCCCCC.001.mp4": b"t"})
    run = cli("ingest", str(dl2), "--out", str(tmp_path / "raw2"), "--no-progress", "--params", str(tmp_path / "no"),
              "--limit", "max_member_bytes=1M")
    assert_one_line_error(run, "clips.zip: AAAAAAAAAAA.001.mp4: larger than 1 MiB inflated (limit max_member_bytes)")
    with pytest.raises(IngestError, match=r"more than 2 MiB in all \(limit max_total_bytes"):
        chalearn_ingest(dl2, tmp_path / "raw3", limits=IngestLimits(max_total_bytes=2 << 20))


def test_bzip2_and_lzma_members_are_refused(tmp_path):
    # zipfile inflates these a whole read at a time, with no output bound: no cap could stop a bomb.
    for method, code in ((zipfile.ZIP_BZIP2, 12), (zipfile.ZIP_LZMA, 14)):
        dl = minimal_downloads(tmp_path / f"dl{code}", {"AAAAAAAAAAA.001.mp4": b"x" * 100}, compression=method)
        with pytest.raises(IngestError, match=rf"^clips\.zip: AAAAAAAAAAA\.001\.mp4: compression method {code} is "
                                              "not read"):
            chalearn_ingest(dl, tmp_path / "raw")


def test_counts_of_clips_label_files_and_rows_are_bounded(tmp_path):
    dl = minimal_downloads(tmp_path / "dl", {f"Z{i:010d}.001.mp4": b"" for i in range(50)})
    with pytest.raises(IngestError, match=r"^clips\.zip: Z0000000020\.001\.mp4: more than 20 clips in the archives "
                                          r"\(limit max_clips\)"):
        chalearn_ingest(dl, tmp_path / "raw", limits=IngestLimits(max_clips=20))
    with pytest.raises(IngestError, match=r"more than 2 annotation and demographics files \(limit max_label_files\)"):
        chalearn_ingest(dl, tmp_path / "raw", limits=IngestLimits(max_label_files=2))
    with pytest.raises(IngestError, match=r"more than 20000 entries \(limit max_members\)"):
        (dl / "many.zip").write_bytes(zip_bytes({f"x{i}.txt": b"" for i in range(20_001)}))
        chalearn_ingest(dl, tmp_path / "raw")
    warnings: list[str] = []
    text = "VideoName;YouTubeID;Ethnicity;Gender\n" + "AAAAAAAAAAA.001.mp4;AAAAAAAAAAA;1;1\n" * 10
    assert len(chalearn.parse_demographics(text, "d.csv", warnings, IngestLimits(max_csv_rows=5))) == 1
    assert warnings == ["d.csv: line 7: more than 5 demographics rows in all (limit max_csv_rows); the rest ignored"]


def test_alias_bomb_params_file_is_a_one_line_config_error(tmp_path):
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\nseed: *a8\n")
    run = cli("ingest", str(tmp_path / "dl"), "--params", str(tmp_path / "params.yaml"))
    assert_one_line_error(run, "config error: ", "aliases expand to more than 10000 extra nodes")


def chalearn_ingest(dl: Path, out: Path, **kw):
    from bigfive.data.ingest import ingest_downloads

    return ingest_downloads(dl, out, show_progress=False, **kw)


def test_demographics_field_over_csv_limit_is_a_warning_naming_the_file(tmp_path):
    dl = minimal_downloads(tmp_path / "dl")
    rows = ["VideoName;YouTubeID;Ethnicity;Gender", "AAAAAAAAAAA.001.mp4;AAAAAAAAAAA;" + "1" * 200_000 + ";1",
            "BBBBBBBBBBB.001.mp4;BBBBBBBBBBB;2;2", "bad\x1b[31mname.mp4;x;1;1"]
    (dl / "eth_gender_annotations_dev.csv").write_text("\n".join(rows) + "\n")
    report = chalearn_ingest(dl, tmp_path / "raw")
    warnings = [w for w in report["warnings"] if "eth_gender_annotations_dev.csv" in w]
    assert any("line 2: unreadable row (field larger than field limit" in w for w in warnings), warnings
    assert any("line 4: VideoName 'bad\\x1b[31mname.mp4' is not a ChaLearn clip name" in w for w in warnings), warnings
    assert report["with_demographics"] == 1  # BBBBBBBBBBB kept, the bad rows lost only their own data


def test_many_bad_demographics_rows_are_counted_not_listed(tmp_path):
    warnings: list[str] = []
    text = "VideoName;YouTubeID;Ethnicity;Gender\n" + "AAAAAAAAAAA.001.mp4;AAAAAAAAAAA;9;9\n" * 1000
    chalearn.parse_demographics(text, "d.csv", warnings)
    assert len(warnings) == 21 and warnings[-1] == "d.csv: 1980 more warning(s) not listed"


# --------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name, shown", [
    ("AAAAAAAAAAA.001\n2024-01-01 INFO forged.mp4", "'AAAAAAAAAAA.001\\n2024-01-01 INFO forged'"),
    ("AAAAAAAAAAA\x1b[2J.001.mp4", "'AAAAAAAAAAA\\x1b[2J.001'"),
    ("AAAAAAAAAAA\t.001.mp4", "'AAAAAAAAAAA\\t.001'"),
    ("A" * 300 + ".001.mp4", "'AAAAAAAA"),
])
def test_clip_names_must_be_chalearn_ids(tmp_path, name, shown, capsys):
    from bigfive.cli import main

    dl = minimal_downloads(tmp_path / "dl", {name: b"x", "BBBBBBBBBBB.001.mp4": b"v", "CCCCCCCCCCC.001.mp4": b"t"})
    rc = main(["ingest", str(dl), "--out", str(tmp_path / "raw"), "--no-progress", "--params", str(tmp_path / "no")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bigfive ingest:")]
    assert rc == 1 and len(lines) == 1, err
    assert f"IngestError: clips.zip!{name[:8]}" in lines[0] and shown in lines[0], lines[0]
    assert "not a ChaLearn clip name" in lines[0] and "\x1b" not in err and "File name too long" not in err
    assert not (tmp_path / "raw").exists()


def test_label_names_must_be_chalearn_ids():
    with pytest.raises(IngestError, match=r"^a\.pkl: openness\['x\\ny\.mp4'\]: not a ChaLearn clip name"):
        parse_annotations({"openness": {"x\ny.mp4": 0.5}}, "a.pkl")
    with pytest.raises(IngestError, match=r"value 1000000000\d*\.\.\.0+ is outside \[0, 1\]$"):
        parse_annotations({t: {"AAAAAAAAAAA.001.mp4": 10**400} for t in ALL_LABELS}, "b.pkl")
    with pytest.raises(IngestError, match=r"value <int of 16610 bits> is outside \[0, 1\]"):  # repr() refuses it
        parse_annotations({t: {"AAAAAAAAAAA.001.mp4": 10**5000} for t in ALL_LABELS}, "b.pkl")


def test_archive_names_in_messages_and_logs_are_escaped(tmp_path, caplog):
    dl = minimal_downloads(tmp_path / "dl")
    (dl / "extra.zip").write_bytes(zip_bytes({"dir\x1b[31m\n/ZZZZZZZZZZZ.001.mp4": b"z"}))
    with caplog.at_level("WARNING"):
        chalearn_ingest(dl, tmp_path / "raw")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dir\\x1b[31m\\n/ZZZZZZZZZZZ.001.mp4" in text and "\x1b" not in text


# --------------------------------------------------------------------------------------------- permissions


def test_output_directories_get_the_usual_permissions(tmp_path):
    dl = minimal_downloads(tmp_path / "dl")
    chalearn_ingest(dl, tmp_path / "data" / "raw")
    umask = os.umask(0)
    os.umask(umask)
    for d in (tmp_path / "data" / "raw", tmp_path / "data" / "raw" / "train"):
        assert d.stat().st_mode & 0o777 == 0o777 & ~umask, oct(d.stat().st_mode)
    assert (tmp_path / "data" / "raw" / "manifest.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_limits_parse_and_validate():
    limits = IngestLimits().replace(["max_member_bytes=2G", "max-ratio=50", "max_pickle_depth=8"])
    assert limits.max_member_bytes == 2 << 30 and limits.max_ratio == 50.0 and limits.max_pickle_depth == 8
    for bad in (["nope=1"], ["max_ratio=inf"], ["max_pickle_depth=0"], ["max_csv_bytes"]):
        with pytest.raises(ValueError, match="limit"):
            IngestLimits().replace(bad)
    scan_pickle(pickle.dumps(annotation(["AAAAAAAAAAA.001"]), protocol=0))
