"""Loading pretrained weights from a local file into a backbone, strictly, with a readable mismatch report.

The file is a public state_dict (bare, or under ``state_dict`` / ``model``; a backbone names the other
layouts it accepts), or a faceauth checkpoint or run directory, whose model's ``backbone.*`` weights are
taken: a liveness run can start from a recognition run's network, or a probe from a trained classifier.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from faceauth.errors import CheckpointError
from faceauth.training.checkpoint import FORMAT, resolve

__all__ = ["load_pretrained", "read_state_dict", "restoring", "is_restoring"]

_RESTORING = contextvars.ContextVar("faceauth_restoring", default=False)


@contextlib.contextmanager
def restoring() -> Iterator[None]:
    """Components built inside get their weights from a checkpoint or an exported model afterwards, so the
    files they would start from (``backbone.pretrained``, a temporal model's encoder checkpoint) are not read:
    a trained model evaluates and exports with no other file."""
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def is_restoring() -> bool:
    """True inside `restoring()`: a builder should make its modules' structure only, reading no weight file."""
    return _RESTORING.get()


def _state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    # A faceauth checkpoint: its model's backbone (a liveness run can start from a recognition run's network).
    if isinstance(payload, dict) and payload.get("format") == FORMAT and isinstance(payload.get("model"), dict):
        backbone = {k.removeprefix("backbone."): v for k, v in payload["model"].items() if k.startswith("backbone.")}
        if not backbone:
            raise CheckpointError(f"{path}: a faceauth {payload.get('task')} checkpoint whose model has no backbone")
        return backbone
    # Public checkpoints come as a bare state_dict, or wrapped under "state_dict"/"model".
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _strip_layout_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameter tensors in weights file `path` (a bare state_dict, one wrapped under ``state_dict`` or
    ``model``, or a faceauth checkpoint's backbone), or a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone.pretrained: {path} does not exist (a local .pth/.pt state_dict file, or a "
                              f"faceauth checkpoint or run directory)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return _state_dict_of(payload, path)


def load_pretrained(module: torch.nn.Module, path: str | Path, *, ignore: tuple[str, ...] = (),
                    prefixes: tuple[str, ...] = (), layouts: str = "") -> None:
    """Load `path` into `module` with strict key and shape matching; `ignore` lists key prefixes to skip.

    `prefixes`: prefixes every key of a file in another accepted layout carries (the first one all
    keys share is removed). `layouts` describes the accepted layouts in the mismatch error.
    """
    if is_restoring():
        return  # the restored weights replace these
    path = resolve(path, key="backbone.pretrained")  # a faceauth run directory: its model's backbone
    state = _strip_layout_prefix(read_state_dict(path), prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"{path}: weights do not match the backbone: {'; '.join(parts)}"
                              + (f"; expected {layouts}" if layouts else ""))
    module.load_state_dict(state, strict=not ignore)
