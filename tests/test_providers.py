"""Execution providers and threads of onnxruntime sessions: the CPU by default, an installed provider on
request, one line naming the installed ones for any other."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from faceauth.deploy.liveness import Liveness
from faceauth.errors import ExportError
from faceauth.io.onnx import check_providers, onnx_session
from tests.test_fusion import component_models, session_cache


@pytest.fixture(scope="module")
def liveness_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        return component_models(session_cache(tmp_path_factory))["liveness"]


def test_the_cpu_by_default_and_threads_as_given(liveness_model: Path) -> None:
    assert check_providers(None) == ["CPUExecutionProvider"]
    session = onnx_session(liveness_model, threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # a comma-separated string (the command line's form) is a list of names
    assert check_providers(" CPUExecutionProvider ") == ["CPUExecutionProvider"]


def test_a_provider_that_is_not_installed_is_one_line_naming_the_installed_ones(liveness_model: Path) -> None:
    installed = ort.get_available_providers()
    missing = next(name for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "NoSuchExecutionProvider")
                   if name not in installed)
    with pytest.raises(ExportError) as caught:
        onnx_session(liveness_model, providers=[missing, "CPUExecutionProvider"])
    message = str(caught.value)
    assert "\n" not in message and f"{missing!r} is not installed" in message
    assert f"(installed: {', '.join(installed)})" in message
    with pytest.raises(ExportError, match="no execution provider given"):
        check_providers([])


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="onnxruntime-gpu not installed")
def test_cuda_when_installed(liveness_model: Path) -> None:
    model = Liveness(liveness_model, detect=False, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert model.model.session.get_providers()[0] == "CUDAExecutionProvider"
