import pytest
from graphs import small_cnn

from compiler.errors import SqueezeError
from compiler.frontend import import_onnx
from compiler.pipeline import PassSpec, Recipe, run_passes


def test_toml_recipe_orders_passes(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[pass]]\nname = "fold_bn"\n\n[[pass]]\nname = "dead_code"\n')
    assert Recipe.from_toml(path).passes == [PassSpec("fold_bn"), PassSpec("dead_code")]


def test_dump_ir_writes_each_step(tmp_path):
    lines = []
    run_passes(import_onnx(small_cnn()), Recipe.cleanups(), dump_ir=tmp_path, log=lines.append)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00_input.py", "01_fold_constant.py", "02_fold_bn.py", "03_canonicalize_clip.py",
                     "04_canonicalize_layer_norm.py", "05_fold_constant.py", "06_dead_code.py"]
    assert "batch_norm" in (tmp_path / "00_input.py").read_text()
    assert "batch_norm" not in (tmp_path / "06_dead_code.py").read_text()
    assert lines[-1] == "pass 6/6: dead_code"


@pytest.mark.parametrize("text, match", [
    ('[[pass]]\nname = "no_such_pass"\n', "unknown pass 'no_such_pass'"),
    ('[[pass]]\nfoo = 1\n', "has no 'name'"),
    ('[[pass]\nname = 1', "not valid TOML"),
    ('[[pass]]\nname = "fold_bn"\nbogus = 3\n', "bad options for pass 'fold_bn'"),
])
def test_bad_recipes(tmp_path, text, match):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(SqueezeError, match=match):
        run_passes(import_onnx(small_cnn()), Recipe.from_toml(path))


def test_recipe_file_is_read_once_for_all_its_tables(tmp_path, monkeypatch):
    import tomllib

    from compiler import api

    path = tmp_path / "r.toml"
    path.write_text('[[pass]]\nname = "fold_bn"\n\n[quantize]\nscheme = "int8"\n\n[prune]\ngranularity = "nm"\n')
    reads = []
    real_load = tomllib.load
    monkeypatch.setattr(tomllib, "load", lambda f: reads.append(f.name) or real_load(f))
    recipe, prune, quantize = api._options(path, None, None, {"input": None})
    assert reads == [str(path)]
    assert recipe.passes == [PassSpec("fold_bn")]
    assert (quantize.scheme, prune.granularity) == ("int8", "nm")
    assert quantize.calibration == prune.calibration == {"input": None}
