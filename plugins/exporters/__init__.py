"""Built-in exporters."""

import faceauth
from faceauth.components import Exporter
from faceauth.plugins.exporters import onnx_exporter


@faceauth.hookimpl
def faceauth_exporters() -> list[Exporter]:
    return [*onnx_exporter.exporters()]
