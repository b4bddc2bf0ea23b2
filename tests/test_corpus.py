"""The real-model corpus table (bench/corpus.py) and the task metrics of bench/models.py."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import corpus  # noqa: E402
import models  # noqa: E402

TASKS = {"classify", "detect", "mask", "ctc", "embed", "audio"}


def test_table_is_consistent():
    names = [e.name for e in corpus.CORPUS]
    assert len(names) == len(set(names)) and len(names) >= 12
    for e in corpus.CORPUS:
        assert e.task in TASKS, e.name
        assert e.asset.member.endswith(".onnx") and e.asset.version, e.name
        assert e.shapes and all(all(d > 0 for d in s) for s in e.shapes.values()), e.name
        if e.task in ("detect", "mask", "audio"):
            assert e.threshold is not None, e.name
        assert set(e.dtypes) <= set(e.shapes), e.name


def test_entries_selects_and_rejects():
    assert [e.name for e in corpus.entries("mtcnn-onet,ppocrv4-det")] == ["mtcnn-onet", "ppocrv4-det"]
    with pytest.raises(SystemExit, match="unknown corpus model"):
        corpus.entries("nope")


def test_wordpiece_splits_punctuation_and_subwords():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "here", ",", "mark", "##ers", "the"])}
    ids, mask = corpus.wordpiece("Here, the markers zz", vocab, 10)
    assert ids.tolist() == [2, 4, 5, 8, 6, 7, 1, 3, 0, 0]
    assert mask.tolist() == [1] * 8 + [0, 0]


def test_text_line_pieces_fit_the_recognizer():
    line = np.full((20, 300, 3), 255, np.uint8)
    line[:, ::7] = 0  # strokes, with white columns between them
    pieces = corpus._segments(line, 320 / 48)
    assert sum(p.shape[1] for p in pieces) == 300
    assert all(p.shape[1] <= 320 / 48 * 20 for p in pieces)
    x = corpus._ppocr_line(pieces[0], 48, 320)
    assert x.shape == (3, 48, 320) and x.dtype == np.float32
    assert np.all(x[:, :, -1] == 0)  # zero padding on the right, as PaddleOCR pads


def test_feeds_round_trip(tmp_path):
    feeds = [{"x": np.full((1, 2), i, np.float32), "sr": np.array(16000, np.int64)} for i in range(3)]
    corpus._save_feeds(tmp_path / "f.npz", feeds)
    back = corpus.load_feeds(tmp_path / "f.npz")
    assert len(back) == 3 and back[2]["x"].shape == (1, 2) and back[2]["x"][0, 0] == 2
    assert isinstance(back[0]["sr"], np.ndarray) and back[0]["sr"].shape == ()


def _entry(**kw) -> corpus.Entry:
    return corpus.Entry("t", corpus.Asset("p", "1", "m.onnx"), kw.pop("task"), {"x": (1,)}, lambda *a: None, "",
                        **kw)


def test_agreement_metrics():
    cls = _entry(task="classify")
    ref = [[np.array([[0.1, 0.9]])], [np.array([[0.8, 0.2]])]]
    assert models.agreement(cls, ref, [[np.array([[0.2, 0.8]])], [np.array([[0.1, 0.9]])]])["value"] == 0.5
    mask = _entry(task="mask", threshold=0.5)
    a, b = np.array([0.9, 0.9, 0.1, 0.1]), np.array([0.9, 0.1, 0.9, 0.1])
    assert models.agreement(mask, [[a]], [[b]])["value"] == pytest.approx(1 / 3)
    assert models.agreement(mask, [[a * 0]], [[b * 0]])["text"] == "no detections"
    ctc = _entry(task="ctc", blank=2, time_major=True)
    logits = np.eye(3)[[0, 0, 2, 0, 1]][:, None, :]  # time × batch × classes: "0 0 _ 0 1" -> (0, 0, 1)
    assert models._ctc(ctc, logits) == (0, 0, 1)
    embed = models.agreement(_entry(task="embed"), [[np.ones((1, 4))]], [[2 * np.ones((1, 4))]])
    assert embed["value"] == pytest.approx(1)
    audio = _entry(task="audio", threshold=0.5)
    assert models.agreement(audio, [[np.array([[0.6]])]], [[np.array([[0.4]])]])["value"] == 0


def test_edit_distance_and_cer():
    assert models._edits((1, 2, 3), (1, 3)) == 1 and models._edits((), (4, 5)) == 2
    ctc = _entry(task="ctc", blank=0)
    ref = [[np.eye(4)[[1, 2, 3, 0]][None]]]
    got = models.agreement(ctc, ref, [[np.eye(4)[[1, 2, 2, 0]][None]]])
    assert got["value"] == 0 and got["cer"] == pytest.approx(1 / 3)


def test_parity():
    ref = [[np.array([1.0, -2.0]), np.array([1, 2])]]
    assert models.parity(ref, [[np.array([1.0, -2.2]), np.array([1, 3])]]) == pytest.approx(0.5)
    assert models.parity(ref, [[np.array([1.0]), np.array([1, 2])]]) == float("inf")


@pytest.mark.slow
def test_prepare_downloads_one_model(tmp_path):
    (entry,) = corpus.entries("mtcnn-onet")
    record = corpus.prepare(entry, tmp_path)
    assert record["opset"] == 12 and record["samples"] == {"eval": 16, "calib": 16}
    again = corpus.prepare(entry, tmp_path, record)
    assert again["cached"]
