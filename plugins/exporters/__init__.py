"""Built-in exporters."""

from faceauth.plugins.exporters.onnx_exporter import faceauth_exporters

__all__ = ["faceauth_exporters"]
