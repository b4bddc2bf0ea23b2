"""``squeeze report``: one self-contained HTML file, rendered in a real headless browser (Debian
``chromium``) and checked on the screenshot: the Pareto plot's front (its red) and the tables'
headers (their blue) must be on the page; the same page without the plot must fail that check."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import squeeze

import compiler
from compiler import zoo
from compiler.html_report import FRONT_COLOR, HEADER_COLOR, build_report
from compiler.search import Candidate

MODEL = str(zoo.model_path("fmnist-resnet8"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    """A search directory around a real INT8 artifact: its records as ``squeeze optimize`` writes them."""
    folder = tmp_path_factory.mktemp("search")
    (folder / "candidates").mkdir()
    calib = {"input": zoo.bundled_slice()["calib"][:16]}
    art = compiler.compile(MODEL, input_shapes={"input": (1, 1, 28, 28)},
                           quantize=compiler.QuantConfig("int8", calibration=calib))
    art.save(folder / "candidates" / "base.tar")
    layers = [{"layer": f"conv2d_{i}", "name": f"n{i}"} for i in range(9)] + [{"layer": "matmul_9", "name": "fc"}]
    records = []
    for i, (desc, latency, metric, cand) in enumerate([
            ("plain INT8", 0.024, 0.933, Candidate()),
            ("prune a:0.5", 0.018, 0.927, Candidate().set_prune("a", 0.5)),
            ("prune a:0.75", 0.014, 0.90, Candidate().set_prune("a", 0.75)),
            ("conv2d_3:w4a8", 0.025, 0.933, Candidate().set_precision("conv2d_3", "w4_sym_per_channel__a8_asym_per_tensor")),
            ("prune b:0.5", None, 0.91, Candidate().set_prune("b", 0.5))]):
        records.append({"key": cand.key, "candidate": cand.to_json(), "describe": desc, "index": i, "metric": metric,
                        "latency_ms": latency, "estimated_ms": latency or 0.02, "size_bytes": 200_000 - 1000 * i,
                        "meets": 0.933 - metric <= 0.01, "gap": max(0, 0.923 - metric),
                        "artifact": "candidates/base.tar"})
    state = {"format": 1, "identity": {"model_name": "fmnist_resnet8.onnx", "goal": "drop<=1%", "metric": "top1"},
             "records": records, "reference_metric": 0.933, "chosen": records[1]["key"],
             "note": "fastest model meeting drop<=1%: prune a:0.5",
             "sensitivity": {row["layer"]: {"w8_sym_per_channel__a8_asym_per_tensor": 40.0 - i,
                                            "w4_sym_per_channel__a8_asym_per_tensor": 20.0 - i}
                             for i, row in enumerate(layers)}}
    (folder / "search.json").write_text(json.dumps(state))
    return folder


def test_report_is_self_contained(search_dir, tmp_path):
    out = tmp_path / "report.html"
    proc = squeeze("report", search_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "<svg" in text and 'id="layers"' in text and 'id="summary"' in text and "id='pareto'" in text
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|url\((?!#)|@import", text, re.I)
    # the only URLs are SVG namespace names, which are never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg",
                                                              "http://www.w3.org/1999/xlink"}
    for column in ("precision", "kept", "sparsity", "SQNR_dB", "latency_us", "kernel"):
        assert f"<th>{column}</th>" in text
    assert "int8 conv2d" in text  # the kernels of the real artifact


def test_report_of_an_artifact_and_bad_paths(search_dir, tmp_path):
    text = build_report(search_dir / "candidates" / "base.tar")
    assert 'id="layers"' in text and "w8a8" in text
    proc = squeeze("report", tmp_path, "-o", tmp_path / "r.html")
    assert proc.returncode == 2 and "not a search directory" in proc.stderr
    proc = squeeze("report", search_dir, "-o", tmp_path / "r.pdf")
    assert proc.returncode == 2 and "HTML file" in proc.stderr


def _screenshot(html_path, png_path) -> np.ndarray:
    from PIL import Image

    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1300,2400", f"--screenshot={png_path}", f"file://{html_path}"],
                   capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(png_path).convert("RGB")).astype(np.int32)


def _count(image: np.ndarray, color: str) -> int:
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - rgb).sum(axis=2) < 40).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: apt-get install chromium")
def test_report_renders_in_chromium(search_dir, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(build_report(search_dir))
    image = _screenshot(page, tmp_path / "shot.png")
    assert image.shape[0] >= 2000 and (image.sum(axis=2) < 600).mean() > 0.02  # not blank
    red, blue = _count(image, FRONT_COLOR), _count(image, HEADER_COLOR)
    assert red > 150, red    # the front's line and markers are drawn
    assert blue > 3000, blue  # the tables' header rows
    rows = np.nonzero((np.abs(image - np.array([214, 39, 40])).sum(axis=2) < 40).any(axis=1))[0]
    heads = np.nonzero((np.abs(image - np.array([31, 78, 121])).sum(axis=2) < 40).sum(axis=1) > 200)[0]
    assert rows.min() > heads.min()  # the plot lies below the summary table's header
    # the check can fail: the same page without the plot shows no front
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<div class='plot' id='pareto'>.*?</svg>\s*</div>", "", page.read_text(), flags=re.S))
    assert _count(_screenshot(bare, tmp_path / "bare.png"), FRONT_COLOR) < 20
