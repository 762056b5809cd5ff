"""Bad input to the command-line tools: one clear line on stderr, exit status 1, and nothing touched on disk.

No test here trains: every case fails before the first step (most before a run directory exists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from PIL import Image

import faceauth.plugins.trainers.classifier  # noqa: F401  (imports torch at collection, not inside the first test)
from faceauth.commands.cli import eval_main, export_main, run_main

SENTINEL = "results of an earlier run\n"


def _snapshot(root: Path) -> dict[str, str | None]:
    """Every path under `root`: a content hash for files, None for directories."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (40 * i, 90, 160)).save(folder / f"{i}.jpg")


def _tree(root: Path, *, val: bool = True, val_spoof: int = 2) -> Path:
    """root/{train,val}/{live,spoof}/ with a couple of tiny JPEGs each."""
    _images(root / "train" / "live", 2)
    _images(root / "train" / "spoof", 2)
    if val:
        _images(root / "val" / "live", 2)
        (root / "val" / "spoof").mkdir(parents=True)
        _images(root / "val" / "spoof", val_spoof)
    return root


@pytest.fixture
def workspace(tmp_path: Path, tiny_recipe: Path) -> Path:
    """tmp_path holding tiny.yaml and an output directory with the result of an earlier run."""
    earlier = tmp_path / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text(SENTINEL, encoding="utf-8")
    return tmp_path


def _folder_recipe(workspace: Path, root: Path) -> Path:
    path = workspace / "folder.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"name": "folder", "root": str(root)},
        "backbone": {"name": "resnet18", "input_size": 32},
        "loss": {"name": "cross_entropy"},
        "trainer": {"name": "classifier", "epochs": 1, "batch_size": 2, "num_workers": 0, "progress": False},
        "output_dir": str(workspace / "runs"),
    }), encoding="utf-8")
    return path


def _missing_file(ws: Path) -> tuple[list[str], list[str]]:
    return [str(ws / "nope.yaml")], [f"{ws / 'nope.yaml'}: recipe file not found"]


def _invalid_yaml(ws: Path) -> tuple[list[str], list[str]]:
    path = ws / "broken.yaml"
    path.write_text("seed: 0\ndata:\n\tname: demo\n", encoding="utf-8")
    return [str(path)], [str(path), "invalid YAML at line 3, column 1"]


def _override(*items: str) -> Callable[[Path], tuple[list[str], list[str]]]:
    def case(ws: Path) -> tuple[list[str], list[str]]:
        return [str(ws / "tiny.yaml"), *items], [f"override '{items[-1]}'"]
    return case


def _missing_root(ws: Path) -> tuple[list[str], list[str]]:
    root = ws / "no_such_data"
    return [str(_folder_recipe(ws, root))], [f"data.root: {root} is not a directory"]


def _root_without_val(ws: Path) -> tuple[list[str], list[str]]:
    root = _tree(ws / "data", val=False)
    return [str(_folder_recipe(ws, root))], [f"data.root: {root} has no 'val/' folder"]


def _empty_spoof(ws: Path) -> tuple[list[str], list[str]]:
    root = _tree(ws / "data", val_spoof=0)
    return [str(_folder_recipe(ws, root))], [str(root / "val"), "the val split has no 'spoof' samples"]


def _unwritable_output(ws: Path) -> tuple[list[str], list[str]]:
    below_a_file = ws / "runs" / "earlier" / "metrics.json" / "sub"
    return [str(ws / "tiny.yaml"), f"output_dir={below_a_file}"], ["output_dir: cannot create run directory",
                                                                   str(below_a_file)]


RUN_CASES = {
    "recipe-missing": _missing_file,
    "invalid-yaml": _invalid_yaml,
    "unknown-key": _override("trainer.epoch=3"),
    "wrong-type": _override("trainer.epochs=fifty"),
    "out-of-range": _override("optimizer.lr=-1"),
    "unknown-component": _override("backbone.name=resnet19"),
    "override-without-equals": _override("trainer.epochs"),
    "override-non-existent-key": _override("scheduler.patience=3"),
    "data-root-missing": _missing_root,
    "data-root-without-val": _root_without_val,
    "empty-spoof-folder": _empty_spoof,
    "output-dir-unwritable": _unwritable_output,
}

EXPECTED_DETAIL = {  # what the line says beyond naming the key or file
    "unknown-key": ["trainer.epoch: unknown key", "did you mean 'epochs'?"],
    "wrong-type": ["trainer.epochs: expected an integer, got 'fifty'"],
    "out-of-range": ["optimizer.lr: expected a positive number, got -1.0"],
    "unknown-component": ["backbone.name: unknown backbone 'resnet19'", "did you mean 'resnet18'?"],
    "override-without-equals": ["expected key=value"],
    "override-non-existent-key": ["scheduler.patience: unknown key"],
}


def _assert_one_error_line(prog: str, rc: int, captured: pytest.CaptureResult, expected: list[str]) -> str:
    assert rc == 1
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{prog}: error: ")
    for fragment in expected:
        assert fragment in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", RUN_CASES, ids=list(RUN_CASES))
def test_run_rejects_bad_input_with_one_line_and_touches_nothing(case, workspace, capsys):
    argv, expected = RUN_CASES[case](workspace)
    before = _snapshot(workspace)
    rc = run_main(argv)
    _assert_one_error_line("faceauth-run", rc, capsys.readouterr(), expected + EXPECTED_DETAIL.get(case, []))
    assert _snapshot(workspace) == before
    assert (workspace / "runs" / "earlier" / "metrics.json").read_text(encoding="utf-8") == SENTINEL


def test_failed_run_leaves_no_new_output_dir(tmp_path, capsys):
    recipe = _folder_recipe(tmp_path, tmp_path / "no_such_data")
    rc = run_main([str(recipe), f"output_dir={tmp_path / 'fresh'}"])
    assert rc == 1 and "data.root" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()


def test_recipe_path_containing_equals_is_still_the_recipe(tiny_recipe, tmp_path, capsys):
    folder = tmp_path / "lr=0.1"
    folder.mkdir()
    recipe = folder / "r.yaml"
    recipe.write_text(tiny_recipe.read_text(encoding="utf-8"), encoding="utf-8")
    try:
        rc = run_main(["--print-recipe", str(recipe)])
    except SystemExit as exc:  # today: argparse's "a recipe file is required"
        rc = exc.code
    assert rc == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["epochs"] == 2


# --- faceauth-eval / faceauth-export ---------------------------------------------------------


def test_eval_missing_checkpoint(tmp_path, capsys):
    path = tmp_path / "missing.pt"
    rc = eval_main([str(path)])
    _assert_one_error_line("faceauth-eval", rc, capsys.readouterr(), [f"{path}: checkpoint not found"])
    assert list(tmp_path.iterdir()) == []


def test_eval_run_directory_without_checkpoints(tmp_path, capsys):
    rc = eval_main([str(tmp_path)])
    _assert_one_error_line("faceauth-eval", rc, capsys.readouterr(),
                           [f"{tmp_path}: not a run directory (no recipe.yaml; expected a checkpoint file or a run "
                            f"directory with checkpoints/best.pt)"])


def test_eval_file_that_is_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("these are my notes, not a model\n", encoding="utf-8")
    before = _snapshot(tmp_path)
    rc = eval_main([str(path)])
    _assert_one_error_line("faceauth-eval", rc, capsys.readouterr(), [f"{path}: not a readable faceauth checkpoint"])
    assert _snapshot(tmp_path) == before


def test_eval_missing_onnx_model(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    rc = eval_main([str(path)])
    _assert_one_error_line("faceauth-eval", rc, capsys.readouterr(), [f"{path}: ONNX model not found"])


def test_export_file_that_is_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("these are my notes, not a model\n", encoding="utf-8")
    output = tmp_path / "model.onnx"
    rc = export_main([str(path), "-o", str(output)])
    _assert_one_error_line("faceauth-export", rc, capsys.readouterr(), [f"{path}: not a readable faceauth checkpoint"])
    assert not output.exists()


def test_debug_shows_the_exception_instead(tmp_path):
    from faceauth.errors import RecipeError

    with pytest.raises(RecipeError, match="recipe file not found"):
        run_main([str(tmp_path / "nope.yaml"), "--debug"])
