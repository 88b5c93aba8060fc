"""Seeded fuzzing of what ``bigfive ingest`` reads: mutated annotation pickles, CSVs and archives.

Every mutated input must end in :class:`IngestError` or success: never another exception, never a
signal (the parsing runs in a subprocess, so a segfault fails this test instead of killing pytest),
and the subprocess's peak memory stays under the ingest bound. Fixed seed and case counts: the
same inputs on every run, a few seconds of CPU. For a longer local hunt:
``BIGFIVE_FUZZ_SEED=7 BIGFIVE_FUZZ_CASES=5000 pytest tests/test_hostile_fuzz.py``.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from test_hostile_inputs import PEAK_MB, annotation, run_measured, zip_bytes
from test_pickle_safety import py2_pickle

SEED = int(os.environ.get("BIGFIVE_FUZZ_SEED", "20240601"))
CASES = int(os.environ.get("BIGFIVE_FUZZ_CASES", "300"))  # pickles; archives get a third as many
IDS = ["AAAAAAAAAAA.001", "-bBbBbBbBbB.002", "C_C_C_C_C_C.003"]
# Opcodes worth splicing in: containers, marks, memo traffic, big lengths, globals.
SNIPPETS = [b"(", b"t", b"l", b"d", b"}", b"]", b")", b"\x85", b"\x86", b"\x87", b"s", b"u", b"a", b"e", b"0",
            b"1", b"2", b"h\x00", b"h\x01", b"q\x00", b"r\xff\xff\xff\x7f", b"j\x00\x00\x00\x00", b"\x94",
            b"N", b"\x88", b"G\x7f\xf0\x00\x00\x00\x00\x00\x00", b"J\xff\xff\xff\xff", b"\x8a\x08" + b"\xff" * 8,
            b"X\xff\xff\xff\x7f", b"T\xff\xff\xff\x7f", b"\x8d" + b"\xff" * 8, b"\x95" + b"\xff" * 8, b"b",
            b"R", b"\x81", b"\x93", b"cnumpy\ndtype\n", b"c_codecs\nencode\n", b"cos\nsystem\n",
            b"cnumpy.core.multiarray\nscalar\n", b"\x8f", b"\x90", b"\x91", b"\x96\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x97", b"\x98", b"\x82\x01", b"P0\n", b"Q", b"\x80\x05", b"."]
BOUNDARY = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


def base_pickles() -> list[bytes]:
    import numpy as np

    obj = annotation(IDS)
    with_numpy = {t: {k: np.float64(v) for k, v in d.items()} for t, d in obj.items()}
    return [pickle.dumps(obj, protocol=p) for p in (0, 2, 4, 5)] + [py2_pickle(obj),
                                                                     pickle.dumps(with_numpy, protocol=2)]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(7)
        if kind == 0 and out:  # flip a byte
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:  # splice an opcode snippet
            out[at:at] = rng.choice(SNIPPETS)
        elif kind == 2:  # delete a range
            del out[at:at + rng.randint(1, 16)]
        elif kind == 3 and out:  # duplicate a range (repeated structure, many memo references)
            end = min(len(out), at + rng.randint(1, 64))
            out[at:at] = out[at:end] * rng.randint(1, 50)
        elif kind == 4:  # truncate
            del out[at:]
        elif kind == 5 and len(out) >= 4:  # a boundary value over a 1-, 2- or 4-byte field
            width = rng.choice((1, 2, 4))
            at = min(at, len(out) - width)
            value = rng.choice(BOUNDARY) & ((1 << (8 * width)) - 1)
            out[at:at + width] = value.to_bytes(width, "little")
        else:  # a run of nesting
            out[at:at] = rng.choice([b"(", b"]", b"}", b"N\x85"]) * rng.randint(1, 200)
    return bytes(out)


def mutate_zip_fields(rng: random.Random, data: bytes) -> bytes:
    """Boundary values in the sizes, counts, lengths and offsets of zip headers."""
    out = bytearray(data)
    heads = [i for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06") for i in _find_all(out, sig)]
    for _ in range(rng.randint(1, 3)):
        if not heads:
            break
        head = rng.choice(heads)
        offset = head + rng.choice((8, 10, 14, 18, 20, 22, 24, 26, 28, 30, 32, 42))
        width = 4 if rng.random() < 0.6 else 2
        if offset + width <= len(out):
            out[offset:offset + width] = (rng.choice(BOUNDARY) & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(out)


def _find_all(data: bytearray, sig: bytes) -> list[int]:
    found, at = [], data.find(sig)
    while at != -1:
        found.append(at)
        at = data.find(sig, at + 1)
    return found


def fuzz_main(seed: int, cases: int, workdir: str) -> int:
    """Run the cases; print the first failure and return 3, else return 0. Runs in a subprocess."""
    from bigfive.data.chalearn import IngestError, load_pickle, parse_annotations
    from bigfive.data.ingest import ingest_downloads

    rng = random.Random(seed)
    pickles = base_pickles()
    for i in range(cases):
        data = mutate(rng, rng.choice(pickles))
        try:
            parse_annotations(load_pickle(data, "f.pkl"), "f.pkl")
        except IngestError:
            pass
        except BaseException as err:  # noqa: BLE001 - the point: anything else is a bug
            print(f"pickle case {i} (seed {seed}): {type(err).__name__}: {str(err)[:300]}\n{data.hex()[:4000]}")
            return 3

    csv = ("VideoName;YouTubeID;Ethnicity;Gender\n"
           + "".join(f"{v}.mp4;{v.rsplit('.', 1)[0]};{1 + k % 3};{1 + k % 2}\n" for k, v in enumerate(IDS))).encode()
    clips = {f"{v}.mp4": rng.randbytes(300) for v in IDS}
    nested = zip_bytes(dict(list(clips.items())[:2]), zipfile.ZIP_STORED)
    val = pickle.dumps(annotation([]), protocol=2)
    work = Path(workdir)
    for j in range(max(cases // 3, 1)):
        train, demo, inner = pickles[j % len(pickles)], csv, nested
        kind = j % 4
        if kind == 1:
            train = mutate(rng, train)
        elif kind == 2:
            demo = mutate(rng, demo)
        elif kind == 3:
            inner = mutate_zip_fields(rng, inner) if rng.random() < 0.5 else mutate(rng, inner)
        outer = zip_bytes({"annotation_training.pkl": train, "eth_gender_annotations_dev.csv": demo,
                           "training80_01.zip": inner, IDS[2] + ".mp4": clips[IDS[2] + ".mp4"]},
                          zipfile.ZIP_DEFLATED)
        if kind == 0:
            outer = mutate_zip_fields(rng, outer) if rng.random() < 0.5 else mutate(rng, outer)
        root = work / f"dl{j}"
        root.mkdir()
        (root / "train-1.zip").write_bytes(outer)
        (root / "annotation_validation.pkl").write_bytes(val)
        try:
            ingest_downloads(root, work / f"raw{j}", show_progress=False, partial=True)
        except IngestError:
            pass
        except BaseException as err:  # noqa: BLE001
            print(f"archive case {j} (seed {seed}, kind {kind}): {type(err).__name__}: {str(err)[:300]}")
            (work / "failing.zip").write_bytes(outer)
            return 3
        shutil.rmtree(root)
        shutil.rmtree(work / f"raw{j}", ignore_errors=True)
    return 0


def test_fuzzed_pickles_and_archives_end_in_ingest_error_or_success(tmp_path):
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); from test_hostile_fuzz import fuzz_main; "
            f"sys.exit(fuzz_main({SEED}, {CASES}, {str(tmp_path)!r}))")
    run = run_measured([sys.executable, "-c", code])
    assert run.rc >= 0, f"killed by signal {-run.rc}:\n{run.out[-3000:]}\n{run.err[-3000:]}"
    assert run.rc == 0, f"{run.out[-4000:]}\n{run.err[-3000:]}"
    assert run.peak_mb < PEAK_MB, f"peak {run.peak_mb:.0f} MB"


if __name__ == "__main__":  # pragma: no cover - a long local hunt: python tests/test_hostile_fuzz.py SEED CASES
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(fuzz_main(int(sys.argv[1]), int(sys.argv[2]), tmp))
