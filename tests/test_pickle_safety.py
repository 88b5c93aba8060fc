"""The restricted unpickler reads plain Python-2/3 label pickles and runs nothing in a crafted one."""

from __future__ import annotations

import copyreg
import os
import pickle
import struct

import pytest

from bigfive.data.chalearn import IngestError, load_pickle, parse_annotations


class Payload:
    """Unpickling this with plain pickle runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def py2_pickle(obj) -> bytes:
    """What Python 2's cPickle (protocol 2) writes for dicts of byte strings and floats."""
    out = bytearray(b"\x80\x02")

    def dump(o):
        if isinstance(o, dict):
            out.extend(b"}")  # EMPTY_DICT
            if o:
                out.extend(b"(")  # MARK
                for k, v in o.items():
                    dump(k)
                    dump(v)
                out.extend(b"u")  # SETITEMS
        elif isinstance(o, str):  # a Python-2 str: raw bytes, decoded by the reader's encoding
            data = o.encode("latin1")
            out.extend((b"U" + bytes([len(data)])) if len(data) < 256 else (b"T" + struct.pack("<I", len(data))))
            out.extend(data)
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        else:
            raise TypeError(type(o))

    dump(obj)
    out.extend(b".")
    return bytes(out)


def test_crafted_pickle_runs_with_plain_pickle_but_not_ours(tmp_path):
    # Control: the payload is real (plain pickle executes it), so the refusal below means something.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(control), protocol=2))
    assert control.exists()

    for protocol in (0, 2, 4):
        marker = tmp_path / f"marker{protocol}"
        data = pickle.dumps({"extraversion": Payload(marker)}, protocol=protocol)
        with pytest.raises(IngestError, match=r"annotation_training\.pkl: pickle: refused global (posix|os)\.system"):
            load_pickle(data, "annotation_training.pkl")
        assert not marker.exists()


def test_extension_registry_and_persistent_ids_refused(tmp_path):
    marker = tmp_path / "ext"
    copyreg.add_extension("posix", "system", 0x7F0001)
    try:
        data = pickle.dumps(Payload(marker), protocol=2)
        assert b"\x82" in data or b"\x83" in data or b"\x84" in data  # EXT opcode really used
        with pytest.raises(IngestError, match="refused global"):
            load_pickle(data, "x.pkl")
    finally:
        copyreg.remove_extension("posix", "system", 0x7F0001)
    assert not marker.exists()
    # PERSID "0\n" then STOP: refused even though no global is named.
    with pytest.raises(IngestError, match="persistent id"):
        load_pickle(b"P0\n.", "y.pkl")


def test_python2_pickle_with_latin1_bytes_loads():
    obj = {"openness": {"-6otZ7M-Mro.003.mp4": 0.25, "caf\xe9_idxxxxx.001.mp4": 1.0}}
    data = py2_pickle(obj)
    assert b"U\x13-6otZ7M-Mro.003.mp4" in data  # really a Py2 byte-string opcode, not unicode
    assert load_pickle(data, "a.pkl") == obj


def test_garbage_and_truncated_pickles_are_clear_errors():
    good = pickle.dumps({"a": 1.0}, protocol=2)
    with pytest.raises(IngestError, match=r"^b\.pkl: pickle: not a readable pickle"):
        load_pickle(good[:-3], "b.pkl")
    with pytest.raises(IngestError, match=r"^c\.pkl: pickle: not a readable pickle"):
        load_pickle(b"PK\x03\x04 this is a zip", "c.pkl")


def test_non_dict_pickle_is_refused_by_the_validator():
    with pytest.raises(IngestError, match="expected a dict of traits, got list"):
        parse_annotations(load_pickle(pickle.dumps([1, 2], protocol=2), "d.pkl"), "d.pkl")


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_numpy_float_labels_load_as_plain_floats(protocol):
    import numpy as np

    labels = {"openness": {"abc.001.mp4": np.float64(0.625)}, "neuroticism": {"abc.001.mp4": np.float32(0.5)}}
    out = load_pickle(pickle.dumps(labels, protocol=protocol), "annotation_training.pkl")
    assert out == {"openness": {"abc.001.mp4": 0.625}, "neuroticism": {"abc.001.mp4": 0.5}}
    assert type(out["openness"]["abc.001.mp4"]) is float


def test_numpy_object_dtype_is_refused(tmp_path):
    import numpy as np

    with pytest.raises(IngestError, match="refused numpy dtype"):
        load_pickle(pickle.dumps(np.array([1], dtype=object)[0:1].dtype, protocol=2), "x.pkl")
