"""faceauth.io.paths.atomic_write: a file appears whole or not at all, with the mode a plain open() gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faceauth.io.paths import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("durable", [False, True])
def test_a_finished_write_replaces_the_file_with_the_umask_mode(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "deep" / "model.onnx"
    with atomic_write(target, durable=durable) as handle:
        handle.write(b"new")
        assert not target.exists() and Path(handle.name).parent == target.parent
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o666 & ~_current_umask()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
