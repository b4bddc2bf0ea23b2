"""compiler.timing: engines timed in their own worker processes, interleaved, none left behind."""
import psutil

from compiler.timing import Engine, interleaved


def test_interleaved_times_each_engine_every_round(cnn_artifact, cnn_path, cnn_input):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    samples = interleaved({"squeeze": Engine(str(cnn_artifact)), "ort": Engine(str(cnn_path))},
                          {"input": cnn_input}, threads=1, rounds=3, runs=2)
    assert set(samples) == {"squeeze", "ort"}
    assert all(len(v) == 3 and all(t > 0 for t in v) for v in samples.values())
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before  # workers ended


def test_engine_kind_follows_the_file():
    assert Engine("model.tar").kind == "squeeze"
    assert Engine("model.onnx").kind == "ort"
    assert Engine("model.xml", "/opt/openvino/bin/python").kind == "openvino"
