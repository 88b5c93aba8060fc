"""ChaLearn ingest on a tiny download layout built from real mp4 clips, real zips and encryption."""

from __future__ import annotations

import csv
import json
import math
import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import pyzipper
import yaml
from test_pickle_safety import Payload, py2_pickle

from bigfive import ALL_LABELS
from bigfive.cli import main
from bigfive.data.chalearn import MANIFEST_COLUMNS, IngestError, subject_disjoint_split
from bigfive.data.ingest import ingest_downloads

PASSWORD = b"s3cr3t-Pw"
# video_id -> official split; ids start with '-' and subjects recur across splits, as in the release.
OFFICIAL = {
    "-abcDEF_123.001": "train", "-abcDEF_123.002": "train", "B0b_b0b-xyz.001": "train",
    "B0b_b0b-xyz.002": "train", "CCCCCCCCCCC.001": "train", "DDDDDDDDDDD.004": "train",
    "-abcDEF_123.003": "val", "EEEEEEEEEEE.001": "val",
    "B0b_b0b-xyz.003": "test", "FFFFFFFFFFF.002": "test",
}
PICKLE_NAMES = {"train": "annotation_training.pkl", "val": "annotation_validation.pkl", "test": "annotation_test.pkl"}
HAVE_ZIP = shutil.which("zip") is not None


def write_clip(path: Path, color: tuple[int, int, int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (64, 64))
    assert writer.isOpened()
    for i in range(16):
        frame = np.full((64, 64, 3), color, np.uint8)
        frame[i * 4:i * 4 + 4] = 255  # a moving bar: 16 distinct frames
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for k, vid in enumerate([*OFFICIAL, "ZZZZZZZZZZZ.001"]):
        path = root / f"{vid}.mp4"
        write_clip(path, (20 * k, 255 - 20 * k, 100))
        out[vid] = path.read_bytes()
    assert len(set(out.values())) == len(out)  # every clip distinguishable by its bytes
    return out


def default_labels() -> dict[str, dict[str, dict[str, float]]]:
    rng = np.random.default_rng(0)
    labels: dict[str, dict[str, dict[str, float]]] = {"train": {}, "val": {}, "test": {}}
    for vid, split in OFFICIAL.items():
        labels[split][vid] = {lb: float(rng.uniform(0, 1)) for lb in ALL_LABELS}
    return labels


def annotation(labels: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{trait: {"<id>.mp4": value}}`` as in the release (trait order as in the release)."""
    traits = ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "interview", "openness")
    return {t: {f"{vid}.mp4": values[t] for vid, values in labels.items() if t in values} for t in traits}


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    path.write_bytes(zip_bytes(members, compression))


def write_aes_zip(path: Path, members: dict[str, bytes], password: bytes) -> None:
    with pyzipper.AESZipFile(path, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(password)
        for name, data in members.items():
            zf.writestr(name, data)


def write_zipcrypto_zip(path: Path, members: dict[str, bytes], password: bytes, work: Path) -> None:
    """Classic ZipCrypto (what most real archives use), via Info-ZIP when it is installed."""
    if not HAVE_ZIP:
        return write_aes_zip(path, members, password)
    work.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (work / name).write_bytes(data)
    subprocess.run(["zip", "-q", "-j", "-P", password.decode(), str(path.resolve()), *members], cwd=work, check=True)


def build_downloads(root: Path, clips: dict[str, bytes], labels=None, *, pickles: dict[str, bytes] | None = None,
                    password: bytes = PASSWORD) -> Path:
    """The official layout: outer zips of nested zips, encrypted val/test, pickles loose and zipped."""
    root.mkdir(parents=True, exist_ok=True)
    labels = default_labels() if labels is None else labels
    by_split = {s: [v for v, sp in OFFICIAL.items() if sp == s and v in clips] for s in ("train", "val", "test")}
    mp4 = {v: clips[v] for v in OFFICIAL if v in clips}
    train = by_split["train"]
    write_zip(root / "train-1.zip", {"training80_01.zip": zip_bytes({f"{v}.mp4": mp4[v] for v in train[:4]})})
    write_zip(root / "train-2.zip", {"training80_02.zip": zip_bytes({f"{v}.mp4": mp4[v] for v in train[4:]},
                                                                     zipfile.ZIP_DEFLATED)}, zipfile.ZIP_DEFLATED)
    write_zipcrypto_zip(root / "val-1.zip",
                        {"validation80_01.zip": zip_bytes({f"{v}.mp4": mp4[v] for v in by_split["val"]})},
                        password, root.parent / f"{root.name}-zipwork")
    write_aes_zip(root / "test-1e.zip", {"test80_01.zip": zip_bytes({f"{v}.mp4": mp4[v] for v in by_split["test"]})},
                  password)

    pickles = dict(pickles or {})
    data = {s: pickles.get(s) for s in ("train", "val", "test")}
    # training: a genuine Python-2 style pickle inside a plain annotation zip
    write_zip(root / "train-annotation.zip",
              {PICKLE_NAMES["train"]: data["train"] or py2_pickle(annotation(labels["train"]))})
    # validation: unpacked, protocol 2
    (root / PICKLE_NAMES["val"]).write_bytes(data["val"] or pickle.dumps(annotation(labels["val"]), protocol=2))
    # test: inside an encrypted annotation zip
    write_aes_zip(root / "test-annotation-e.zip",
                  {PICKLE_NAMES["test"]: data["test"] or pickle.dumps(annotation(labels["test"]), protocol=2)},
                  password)

    dev = ["VideoName;YouTubeID;Ethnicity;Gender"]
    test = list(dev)
    for k, (vid, split) in enumerate(OFFICIAL.items()):
        if vid == "DDDDDDDDDDD.004":
            continue  # a clip without demographics
        line = f"{vid}.mp4;{vid.rsplit('.', 1)[0]};{1 + k % 3};{1 + k % 2}"
        (test if split == "test" else dev).append(line)
    (root / "eth_gender_annotations_dev.csv").write_text("\n".join(dev) + "\n")
    (root / "eth_gender_annotations_test.csv").write_text("\n".join(test) + "\n")
    (root / "sample_metadata.json").write_text(json.dumps({"noise_floor_mean_accuracy": 0.97}))
    return root


def ingest(dl: Path, out: Path, **kw):
    kw.setdefault("password", PASSWORD)
    kw.setdefault("show_progress", False)
    return ingest_downloads(dl, out, **kw)


def read_manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype={"video_id": str, "youtube_id": str, "ethnicity": str,
                                                    "gender": str}, keep_default_na=False)


def assert_no_temp_dirs(parent: Path) -> None:
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------


def test_official_ingest_layout_labels_and_demographics(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    out = tmp_path / "data" / "raw"
    report = ingest(dl, out)

    df = read_manifest(out)
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert dict(zip(df.video_id, df.split)) == OFFICIAL
    assert list(df.split) == sorted(df.split, key=["train", "val", "test"].index)  # grouped in split order
    labels = default_labels()
    for row in df.itertuples():
        assert row.path == f"{row.split}/{row.video_id}.mp4"
        assert (out / row.path).read_bytes() == clips[row.video_id]  # the right clip under the right name
        assert row.youtube_id == row.video_id.rsplit(".", 1)[0]
        for lb in ALL_LABELS:
            assert getattr(row, lb) == labels[row.split][row.video_id][lb]  # exact, not rounded
    d = df.set_index("video_id")
    assert d.loc["DDDDDDDDDDD.004", "ethnicity"] == "" and d.loc["DDDDDDDDDDD.004", "gender"] == ""
    assert d.loc["-abcDEF_123.001", "ethnicity"] == "1" and d.loc["-abcDEF_123.001", "gender"] == "1"
    assert d.loc["-abcDEF_123.002", "ethnicity"] == "2" and d.loc["-abcDEF_123.002", "gender"] == "2"
    # The decoder reads what was ingested (real mp4s survive the trip through nested/encrypted zips).
    cap = cv2.VideoCapture(str(out / "test" / "FFFFFFFFFFF.002.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    cap.release()

    assert sorted(p.name for p in out.iterdir()) == ["ingest_report.json", "manifest.csv", "sample_metadata.json",
                                                     "test", "train", "val"]
    on_disk = json.loads((out / "ingest_report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["counts"] == {"train": 6, "val": 2, "test": 2}
    assert report["subjects_in_several_splits"] == 2  # -abcDEF_123 and B0b_b0b-xyz
    assert report["videos_without_label"] == [] and report["labels_without_video"] == []
    assert report["with_demographics"] == 9
    assert sorted(report["archives"]) == ["test-1e.zip", "train-1.zip", "train-2.zip", "val-1.zip"]
    assert len(report["annotation_files"]) == 3
    assert_no_temp_dirs(out.parent)
    for path in out.rglob("*"):  # the password is nowhere in the output
        assert not path.is_file() or PASSWORD not in path.read_bytes()


def test_subject_disjoint_ingest(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    report = ingest(dl, tmp_path / "raw", split="subject_disjoint", seed=3)
    df = read_manifest(tmp_path / "raw")
    assert sorted(df.video_id) == sorted(OFFICIAL)
    assert df.groupby("youtube_id").split.nunique().max() == 1
    assert report["subjects_in_several_splits"] == 0
    counts = df.split.value_counts().to_dict()
    assert set(counts) == {"train", "val", "test"}
    for split, target in {"train": 6, "val": 2, "test": 2}.items():
        assert abs(counts[split] - target) <= 3  # within the biggest subject's clip count
    labels = {v: lab for split in default_labels().values() for v, lab in split.items()}
    for row in df.itertuples():  # labels travel with their clip
        assert (tmp_path / "raw" / row.path).read_bytes() == clips[row.video_id]
        assert row.openness == labels[row.video_id]["openness"]


def test_subject_disjoint_split_proportions_and_seed():
    rng = np.random.default_rng(1)
    youtube, official = {}, {}
    splits = rng.choice(["train", "val", "test"], p=[0.6, 0.2, 0.2], size=2000)
    for k in range(2000):
        vid = f"s{int(rng.integers(0, 600)):04d}.{k:03d}"
        youtube[vid], official[vid] = vid.split(".")[0], str(splits[k])
    out = subject_disjoint_split(youtube, official, seed=0)
    assert out == subject_disjoint_split(youtube, official, seed=0)
    assert out != subject_disjoint_split(youtube, official, seed=1)
    by_subject: dict[str, set[str]] = {}
    for vid, split in out.items():
        by_subject.setdefault(youtube[vid], set()).add(split)
    assert max(len(s) for s in by_subject.values()) == 1
    biggest = max(sum(1 for v in youtube if youtube[v] == s) for s in by_subject)
    for split in ("train", "val", "test"):
        target = sum(1 for s in official.values() if s == split)
        assert abs(sum(1 for s in out.values() if s == split) - target) <= biggest


def test_video_without_label_is_reported_or_strict_error(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    write_zip(dl / "train-3.zip", {"ZZZZZZZZZZZ.001.mp4": clips["ZZZZZZZZZZZ.001"]})
    report = ingest(dl, tmp_path / "raw")
    assert report["videos_without_label"] == ["train-3.zip!ZZZZZZZZZZZ.001.mp4"]
    assert any("ZZZZZZZZZZZ.001" in w for w in report["warnings"])
    assert "ZZZZZZZZZZZ.001" not in set(read_manifest(tmp_path / "raw").video_id)
    with pytest.raises(IngestError, match=r"^train-3\.zip!ZZZZZZZZZZZ\.001\.mp4: ZZZZZZZZZZZ\.001: video has no label"):
        ingest(dl, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_label_without_video_is_reported_or_strict_error(tmp_path, clips):
    labels = default_labels()
    labels["val"]["GGGGGGGGGGG.007"] = dict.fromkeys(ALL_LABELS, 0.5)
    dl = build_downloads(tmp_path / "downloads", clips, labels)
    report = ingest(dl, tmp_path / "raw")
    assert report["labels_without_video"] == ["annotation_validation.pkl: GGGGGGGGGGG.007.mp4"]
    assert report["counts"]["val"] == 2
    with pytest.raises(IngestError, match=r"^annotation_validation\.pkl: GGGGGGGGGGG\.007\.mp4: labelled but no video"):
        ingest(dl, tmp_path / "strict", strict=True)


@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (-0.01, "-0.01"), (math.nan, "nan")])
def test_label_out_of_range_or_nan(tmp_path, clips, value, shown):
    labels = default_labels()
    labels["test"]["FFFFFFFFFFF.002"]["neuroticism"] = value
    dl = build_downloads(tmp_path / "downloads", clips, labels)
    with pytest.raises(IngestError, match=rf"^test-annotation-e\.zip!annotation_test\.pkl: FFFFFFFFFFF\.002\.mp4 "
                                          rf"\(neuroticism\): value {shown} is outside \[0, 1\]"):
        ingest(dl, tmp_path / "raw")


def test_missing_trait(tmp_path, clips):
    obj = annotation(default_labels()["train"])
    del obj["conscientiousness"]
    dl = build_downloads(tmp_path / "downloads", clips, pickles={"train": py2_pickle(obj)})
    with pytest.raises(IngestError, match=r"^train-annotation\.zip!annotation_training\.pkl: conscientiousness: "
                                          r"missing trait"):
        ingest(dl, tmp_path / "raw")


def test_trait_missing_for_one_clip(tmp_path, clips):
    obj = annotation(default_labels()["val"])
    del obj["interview"]["EEEEEEEEEEE.001.mp4"]
    dl = build_downloads(tmp_path / "downloads", clips, pickles={"val": pickle.dumps(obj, protocol=2)})
    with pytest.raises(IngestError, match=r"^annotation_validation\.pkl: EEEEEEEEEEE\.001\.mp4: no interview label"):
        ingest(dl, tmp_path / "raw")


def test_duplicate_clip_in_two_archives(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    write_zip(dl / "train-9.zip", {"dir/CCCCCCCCCCC.001.mp4": clips["CCCCCCCCCCC.001"]})
    with pytest.raises(IngestError, match=r"^train-9\.zip!dir/CCCCCCCCCCC\.001\.mp4: CCCCCCCCCCC\.001: duplicate clip: "
                                          r"also in train-2\.zip!training80_02\.zip!CCCCCCCCCCC\.001\.mp4"):
        ingest(dl, tmp_path / "raw")


def test_duplicate_id_in_two_pickles(tmp_path, clips):
    labels = default_labels()
    labels["val"]["CCCCCCCCCCC.001"] = labels["train"]["CCCCCCCCCCC.001"]
    dl = build_downloads(tmp_path / "downloads", clips, labels)
    with pytest.raises(IngestError, match=r"CCCCCCCCCCC\.001\.mp4: duplicate clip id: also labelled in "):
        ingest(dl, tmp_path / "raw")


def test_same_pickle_unpacked_and_zipped_is_read_once_but_different_is_an_error(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    labels = default_labels()
    (dl / "annotation_training.pkl").write_bytes(pickle.dumps(annotation(labels["train"]), protocol=2))
    assert ingest(dl, tmp_path / "raw")["counts"]["train"] == 6
    labels["train"]["CCCCCCCCCCC.001"]["openness"] = 0.0
    (dl / "annotation_training.pkl").write_bytes(pickle.dumps(annotation(labels["train"]), protocol=2))
    with pytest.raises(IngestError, match=r"annotation_training\.pkl: differs from"):
        ingest(dl, tmp_path / "raw2")


def test_crafted_pickle_refused_and_payload_not_run(tmp_path, clips):
    marker = tmp_path / "pwned"
    crafted = pickle.dumps({"extraversion": Payload(marker)}, protocol=2)
    dl = build_downloads(tmp_path / "downloads", clips, pickles={"val": crafted})
    with pytest.raises(IngestError, match=r"^annotation_validation\.pkl: pickle: refused global (posix|os)\.system"):
        ingest(dl, tmp_path / "raw")
    assert not marker.exists()
    assert not (tmp_path / "raw").exists()


def test_wrong_and_missing_password(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    with pytest.raises(IngestError, match=r"^(val-1\.zip|test-annotation-e\.zip|test-1e\.zip): .*wrong password") as e:
        ingest(dl, tmp_path / "raw", password=b"not-it")
    assert PASSWORD.decode() not in str(e.value)
    with pytest.raises(IngestError, match=r"encrypted; no password given \(set MY_VAR\)"):
        ingest(dl, tmp_path / "raw", password=None, password_hint="set MY_VAR")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("encrypted", [False, True])
def test_wrong_password_names_the_video_archive(tmp_path, clips, encrypted):
    # Only the clip archive is encrypted (ZipCrypto): the error must name it, before copying anything.
    dl = build_downloads(tmp_path / "downloads", clips)
    for name in ("test-1e.zip", "test-annotation-e.zip"):
        with pyzipper.AESZipFile(dl / name) as zf:
            zf.setpassword(PASSWORD)
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        write_zip(dl / name, members)
    if not encrypted:
        (dl / "val-1.zip").unlink()
        # val has labels but no clips left: an incomplete download, refused unless asked for
        with pytest.raises(IngestError, match=r"downloads: val: split is empty: .*pass --partial"):
            ingest(dl, tmp_path / "ok", password=None)
        report = ingest(dl, tmp_path / "ok", password=None, partial=True)
        assert report["labels_without_video"] and report["partial"] is True  # no password needed
        return
    with pytest.raises(IngestError, match=r"^val-1\.zip: validation80_01\.zip: wrong password"):
        ingest(dl, tmp_path / "raw", password=b"nope")


def test_truncated_zip(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    data = (dl / "train-2.zip").read_bytes()
    (dl / "train-2.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=r"^train-2\.zip: archive: not a readable zip \(corrupt or truncated"):
        ingest(dl, tmp_path / "raw")


def test_corrupt_member_fails_crc(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    clip = clips["ZZZZZZZZZZZ.001"]
    write_zip(dl / "extra.zip", {"ZZZZZZZZZZZ.001.mp4": clip})
    data = bytearray((dl / "extra.zip").read_bytes())
    at = data.find(clip) + len(clip) // 2
    data[at] ^= 0xFF
    (dl / "extra.zip").write_bytes(bytes(data))
    # The clip has no label, so it is never copied: add one so the bad bytes are read.
    labels = default_labels()
    labels["train"]["ZZZZZZZZZZZ.001"] = dict.fromkeys(ALL_LABELS, 0.5)
    (dl / "train-annotation.zip").unlink()
    (dl / "annotation_training.pkl").write_bytes(pickle.dumps(annotation(labels["train"]), protocol=2))
    with pytest.raises(IngestError, match=r"^extra\.zip: ZZZZZZZZZZZ\.001\.mp4: corrupt or truncated member .*CRC"):
        ingest(dl, tmp_path / "raw")


def test_failed_ingest_leaves_existing_raw_untouched(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    out = tmp_path / "data" / "raw"
    ingest(dl, out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (dl / "val-1.zip").write_bytes((dl / "val-1.zip").read_bytes()[:100])  # fails after train clips were copied
    with pytest.raises(IngestError, match=r"^val-1\.zip: archive:"):
        ingest(dl, out)
    after = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert_no_temp_dirs(out.parent)


def test_failed_ingest_mid_copy_leaves_no_temp_dir(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    write_zip(dl / "zz-last.zip", {"CCCCCCCCCCC.001.mp4": clips["CCCCCCCCCCC.001"]})  # duplicate, walked last
    out = tmp_path / "data" / "raw"
    with pytest.raises(IngestError, match="duplicate clip"):
        ingest(dl, out)
    assert not out.exists()
    assert_no_temp_dirs(out.parent)


def test_cli_ingest_end_to_end(tmp_path, clips, monkeypatch, capsys):
    dl = build_downloads(tmp_path / "downloads", clips)
    out = tmp_path / "raw"
    monkeypatch.setenv("BIGFIVE_TEST_PW", PASSWORD.decode())
    common = ["--params", str(tmp_path / "absent.yaml"), "--no-progress"]
    assert main(["ingest", str(dl), "--out", str(out), "--password-env", "BIGFIVE_TEST_PW",
                 "--split", "subject_disjoint", "--seed", "1", *common]) == 0
    df = read_manifest(out)
    assert len(df) == 10 and df.groupby("youtube_id").split.nunique().max() == 1
    assert json.loads((out / "ingest_report.json").read_text())["split"] == "subject_disjoint"

    (tmp_path / "pw.txt").write_bytes(PASSWORD + b"\n")
    assert main(["ingest", str(dl), "--out", str(out), "--password-file", str(tmp_path / "pw.txt"), *common]) == 0
    assert dict(zip(read_manifest(out).video_id, read_manifest(out).split)) == OFFICIAL

    monkeypatch.setenv("BIGFIVE_TEST_PW", "wrong")
    assert main(["ingest", str(dl), "--out", str(out), "--password-env", "BIGFIVE_TEST_PW", *common]) == 1
    err = capsys.readouterr().err
    assert "IngestError" in err and "wrong password" in err and PASSWORD.decode() not in err
    assert dict(zip(read_manifest(out).video_id, read_manifest(out).split)) == OFFICIAL  # untouched

    monkeypatch.delenv("BIGFIVE_TEST_PW")
    assert main(["ingest", str(dl), "--out", str(out), "--password-env", "BIGFIVE_TEST_PW", *common]) == 1
    assert "set the environment variable BIGFIVE_TEST_PW" in capsys.readouterr().err


def test_raw_stage_ingests_chalearn_dir(tmp_path, clips, monkeypatch):
    dl = build_downloads(tmp_path / "downloads", clips)
    write_zip(dl / "train-3.zip", {"ZZZZZZZZZZZ.001.mp4": clips["ZZZZZZZZZZZ.001"]})
    params = {"seed": 0, "data": {"source": "chalearn", "chalearn_dir": str(dl), "raw_dir": str(tmp_path / "raw"),
                                  "password_env": "BIGFIVE_RAW_PW", "split": "official"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("BIGFIVE_RAW_PW", PASSWORD.decode())
    assert main(["raw", "--params", str(tmp_path / "params.yaml"), "--no-progress"]) == 0
    df = read_manifest(tmp_path / "raw")
    assert dict(zip(df.video_id, df.split)) == OFFICIAL
    params["data"]["strict"] = True  # the unlabelled clip now stops the stage
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["raw", "--params", str(tmp_path / "params.yaml"), "--no-progress"]) == 1


def test_raw_stage_from_the_sample(tmp_path):
    sample = pytest.importorskip("bigfive.data.sample")
    assert hasattr(sample, "generate")
    params = {"seed": 0, "data": {"source": "sample", "raw_dir": str(tmp_path / "raw")},
              "sample": {"n_train": 4, "n_val": 2, "n_test": 2, "seconds": 1.0, "fps": 8, "width": 64, "height": 64,
                         "downloads_dir": str(tmp_path / "sample_downloads")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["raw", "--params", str(tmp_path / "params.yaml"), "--no-progress"]) == 0
    df = read_manifest(tmp_path / "raw")
    assert df.split.value_counts().to_dict() == {"train": 4, "val": 2, "test": 2}
    assert (tmp_path / "raw" / "sample_metadata.json").is_file()
    for row in df.itertuples():
        assert (tmp_path / "raw" / row.path).stat().st_size > 0
        assert all(0.0 <= getattr(row, lb) <= 1.0 for lb in ALL_LABELS)
    with open(tmp_path / "raw" / "manifest.csv") as f:
        assert next(csv.reader(f)) == list(MANIFEST_COLUMNS)


def test_encrypted_sample_archives_ingest_with_the_password(tmp_path):
    # The generator writes ZipCrypto itself; this checks the two ends agree (and wrong passwords fail).
    sample = pytest.importorskip("bigfive.data.sample")
    from bigfive.config import SampleConfig

    cfg = SampleConfig(n_train=2, n_val=2, n_test=2, seconds=1.0, fps=8, width=64, height=64)
    sample.generate(cfg, tmp_path / "dl", password="pw-sample", progress=False)
    report = ingest(tmp_path / "dl", tmp_path / "raw", password=b"pw-sample")
    assert report["counts"] == {"train": 2, "val": 2, "test": 2}
    with pytest.raises(IngestError, match="wrong password"):
        ingest(tmp_path / "dl", tmp_path / "raw2", password=b"pw-wrong")


def test_loose_clips_are_ingested_and_deep_nesting_refused(tmp_path, clips):
    dl = build_downloads(tmp_path / "downloads", clips)
    (dl / "test-1e.zip").unlink()
    (dl / "unpacked").mkdir()
    for vid in ("B0b_b0b-xyz.003", "FFFFFFFFFFF.002"):
        (dl / "unpacked" / f"{vid}.mp4").write_bytes(clips[vid])
    report = ingest(dl, tmp_path / "raw")
    assert report["counts"] == {"train": 6, "val": 2, "test": 2}
    assert (tmp_path / "raw" / "test" / "FFFFFFFFFFF.002.mp4").read_bytes() == clips["FFFFFFFFFFF.002"]

    inner = zip_bytes({"ZZZZZZZZZZZ.001.mp4": clips["ZZZZZZZZZZZ.001"]})
    for level in range(4):
        inner = zip_bytes({f"level{level}.zip": inner})
    (dl / "bomb.zip").write_bytes(inner)
    with pytest.raises(IngestError, match=r"^bomb\.zip!level3\.zip!level2\.zip!level1\.zip: level0\.zip: zip nested"):
        ingest(dl, tmp_path / "raw2")
