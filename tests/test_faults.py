"""Faults of the disk and of the operator end in one line naming the file and the cause, and damage nothing
already on disk (README: "A run directory"): full and read-only disks, temporary files of a killed run,
two writers of one run directory, resumes that would change the recipe, checkpoints that do not fit."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

import faceauth
import faceauth.io.paths
from faceauth.commands.cli import eval_main, run_main
from faceauth.errors import CheckpointError, RecipeError
from faceauth.io.paths import FolderLocked, folder_lock
from faceauth.training import checkpoint
from tests.conftest import REPO, TINY_RECIPE


def one_line_error(prog: str, rc: int, capsys: pytest.CaptureFixture, *parts: str) -> str:
    """The one error line of a command that failed (the console's progress lines may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert rc == 1 and len(errors) == 1 and lines[-1] == errors[0], lines
    err = errors[0]
    for part in parts:
        assert part in err, err
    return err


class FullDisk(io.BufferedWriter):
    """A file on a disk with `room` bytes left: the write that passes it raises ENOSPC, as the kernel does."""

    def __init__(self, path: str, room: int):
        super().__init__(io.FileIO(path, "wb"))
        self.room = room

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def fill_disk(monkeypatch: pytest.MonkeyPatch, room: int, when: str = "") -> None:
    """Every file faceauth writes atomically whose name holds `when` lands on a full disk."""
    real_open = open

    def opener(path: str, mode: str = "r", *args: object, **kwargs: object) -> object:
        if mode == "wb" and when in Path(path).name:
            return FullDisk(path, room)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(faceauth.io.paths, "open", opener, raising=False)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


# checkpoint writes ------------------------------------------------------------------------------------
def test_a_full_disk_while_writing_a_checkpoint_names_the_file_and_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(10)}, "epoch": 1})
    fill_disk(monkeypatch, room=4096)
    with pytest.raises(CheckpointError) as caught:
        checkpoint.save(path, {"model": {"w": torch.zeros(100_000)}, "epoch": 2})
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot write the checkpoint (No space left on device)") and "\n" not in message
    assert "previous last.pt is kept" in message
    assert checkpoint.load(path)["epoch"] == 1 and temporaries(tmp_path) == []


def test_a_read_only_run_directory_names_the_file_and_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "checkpoints"))

    monkeypatch.setattr(faceauth.io.paths.tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointError, match=r"best\.pt: cannot write the checkpoint \(Read-only file system\)$"):
        checkpoint.save(tmp_path / "checkpoints" / "best.pt", {"epoch": 1})


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run stopped after 2 steps (checkpoints/last.pt written, not finished), to copy and resume."""
    root = tmp_path_factory.mktemp("faults")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(root / "runs")}), encoding="utf-8")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        return faceauth.run(recipe, ["run_name=stopped", "trainer.max_steps=2"]).dir


@pytest.fixture
def run_dir(stopped_run: Path, tmp_path: Path) -> Path:
    return shutil.copytree(stopped_run, tmp_path / "run")


@pytest.mark.slow
def test_a_full_disk_during_a_run_is_one_line_and_the_last_checkpoint_survives(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    fill_disk(monkeypatch, room=10_000, when=".pt.")  # every checkpoint (best.pt may be written first, last.pt linked)
    rc = run_main(["--resume", str(run_dir), "trainer.max_steps=3"])
    err = one_line_error("faceauth-run", rc, capsys, f"{run_dir / 'checkpoints'}/",
                         ".pt: cannot write the checkpoint (No space left on device)")
    assert "best.pt" in err or "previous last.pt is kept" in err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before and temporaries(run_dir) == []


@pytest.mark.slow
def test_a_failed_metrics_write_names_the_file(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    fill_disk(monkeypatch, room=10, when=".metrics.json.")
    rc = run_main(["--resume", str(run_dir), "trainer.max_steps=3"])
    one_line_error("faceauth-run", rc, capsys, f"{run_dir / 'metrics.json'}: cannot write (No space left on device)")
    assert checkpoint.load(run_dir / checkpoint.RESUME_CHECKPOINT)["global_step"] == 3  # what came before the failed write is kept


# temporary files, locks ------------------------------------------------------------------------------
@pytest.mark.slow
def test_temporary_files_of_a_killed_run_are_swept_on_resume(run_dir: Path) -> None:
    left = [run_dir / "checkpoints" / ".last.pt.x1y2z3.tmp", run_dir / "checkpoints" / ".best.pt.abc.tmp",
            run_dir / ".metrics.json.q.tmp"]
    for path in left:
        path.write_bytes(b"\0" * 1000)
    keep = run_dir / "checkpoints" / "notes.tmp"  # not one of faceauth's temporary names
    keep.write_text("mine")
    faceauth.run(None, ["trainer.max_steps=3"], resume=run_dir)
    assert not any(path.exists() for path in left) and keep.read_text() == "mine"


@pytest.mark.slow
def test_a_second_writer_of_a_run_directory_is_refused_naming_the_holder(
        run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, faceauth.io.paths as p\n"
                               f"with p.folder_lock({str(run_dir)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
        rc = run_main(["--resume", str(run_dir), "trainer.max_steps=3"])
        one_line_error("faceauth-run", rc, capsys, f"{run_dir}: in use by another run (pid {holder.pid} on "
                                                   f"{socket.gethostname()}")
        assert {p: p.read_bytes() for p in before} == before  # nothing rewritten, no second event file
    finally:
        holder.communicate("", timeout=30)
    faceauth.run(None, ["trainer.max_steps=3"], resume=run_dir)  # the holder is gone: its lock with it


@pytest.mark.slow
def test_a_stale_lock_file_of_a_dead_process_is_taken_over(run_dir: Path) -> None:
    (run_dir / ".lock").write_text("pid 999999 on elsewhere, since 2026-01-01 00:00:00\n")
    faceauth.run(None, ["trainer.max_steps=3"], resume=run_dir)
    with folder_lock(run_dir):
        with pytest.raises(FolderLocked, match=rf"pid {os.getpid()} on"):
            with folder_lock(run_dir):
                pass


# resume that checks -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("override, shown", [
    ("backbone.input_size=48", "backbone.input_size: 32 in the checkpoint, 48 given"),
    ("backbone.name=resnet34", "backbone.name: 'resnet18' in the checkpoint, 'resnet34' given"),
    ("optimizer.lr=0.5", "optimizer.lr: 0.001 in the checkpoint, 0.5 given"),
])
def test_overrides_with_resume_get_the_recipe_files_check(run_dir: Path, override: str, shown: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    recipe_before = (run_dir / "recipe.yaml").read_bytes()
    rc = run_main(["--resume", str(run_dir), override])
    one_line_error("faceauth-run", rc, capsys, f"override '{override}': the run in {run_dir} was made with another "
                                               f"recipe ({shown})", "may change only trainer.epochs")
    assert (run_dir / "recipe.yaml").read_bytes() == recipe_before


@pytest.mark.slow
def test_recipe_yaml_is_rewritten_only_after_a_successful_restore(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    recipe_before = (run_dir / "recipe.yaml").read_bytes()
    payload = checkpoint.load(run_dir / checkpoint.RESUME_CHECKPOINT)
    payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith("head.")}  # weights that do not fit
    checkpoint.save(run_dir / "checkpoints" / "last.pt", payload)
    rc = run_main(["--resume", str(run_dir), "trainer.epochs=3"])
    one_line_error("faceauth-run", rc, capsys, f"{run_dir / 'checkpoints' / 'last.pt'}: its weights do not fit",
                   "Missing key(s)")
    assert (run_dir / "recipe.yaml").read_bytes() == recipe_before


@pytest.mark.slow
def test_a_checkpoint_of_another_task_cannot_resume_the_run(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    checkpoint.save(last, {**checkpoint.load(last), "task": "embedding"})
    rc = run_main(["--resume", str(run_dir)])
    one_line_error("faceauth-run", rc, capsys, f"{last}: expected a liveness checkpoint to resume this run, "
                                               f"found an embedding checkpoint")


@pytest.mark.slow
def test_an_allowed_change_on_resume_is_written_to_recipe_yaml(run_dir: Path) -> None:
    faceauth.run(None, ["trainer.epochs=3", "trainer.max_steps=3", "export=null"], resume=run_dir)
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["trainer"]["epochs"] == 3


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_says_so(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(run_dir / "checkpoints")
    rc = run_main(["--resume", str(run_dir)])
    one_line_error("faceauth-run", rc, capsys, f"{run_dir}: this run has no checkpoint "
                                               f"({run_dir / 'checkpoints' / 'last.pt'} is missing)",
                   "stopped before its first one was written")


# checkpoint contents ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_checkpoints_without_a_recipe_or_with_weights_that_do_not_fit_are_one_line(
        run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    payload = checkpoint.load(run_dir / checkpoint.RESUME_CHECKPOINT)
    no_recipe = run_dir / "no_recipe.pt"
    checkpoint.save(no_recipe, {k: v for k, v in payload.items() if k not in ("recipe", "path")})
    one_line_error("faceauth-eval", eval_main([str(no_recipe)]), capsys, f"{no_recipe}: no recipe in this checkpoint")
    assert run_main(["--resume", str(no_recipe)]) == 1
    assert "no recipe in this checkpoint" in capsys.readouterr().err
    misfit = run_dir / "misfit.pt"
    checkpoint.save(misfit, {**payload, "model": {**payload["model"], "head.weight": torch.zeros(3, 3)}})
    one_line_error("faceauth-eval", eval_main([str(misfit)]), capsys, f"{misfit}: its weights do not fit the model",
                   "size mismatch")


# figures before export ----------------------------------------------------------------------------
class BrokenExporter:
    @faceauth.hookimpl
    def faceauth_exporters(self):
        from faceauth.components import Exporter

        class Broken:
            def export(self, bundle: object, path: Path) -> Path:
                raise faceauth.ExportError(f"{path}: the parity check failed (simulated)")

        return [Exporter(name="broken", build=Broken, description="always fails")]


@pytest.mark.slow
def test_a_failed_export_keeps_the_figures(run_dir: Path) -> None:
    with pytest.raises(faceauth.ExportError, match=r"simulated\) \(the run's figures are kept in .*metrics\.json\)"):
        faceauth.run(None, ["trainer.max_steps=null", "export={name: broken}"], resume=run_dir,
                     extra_plugins=[BrokenExporter()])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped"] is None and "acer" in metrics["test"]
    assert not (run_dir / "model.onnx").exists()


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    # The folder is claimed by mkdir itself: eight threads asking at once for one name all get a folder of their own.
    from concurrent.futures import ThreadPoolExecutor

    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.runs.runner import _run_dir

    recipe = load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", [f"output_dir={tmp_path}", "run_name=same"],
                         registry=load_registry())
    barrier = threading.Barrier(8)

    def claim(_: int) -> Path:
        barrier.wait()
        return _run_dir(recipe)

    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(claim, range(8)))
    assert len(set(folders)) == 8 and all(folder.is_dir() for folder in folders)
    assert sorted(f.name for f in folders) == sorted(["same"] + [f"same-{i}" for i in range(2, 9)])
