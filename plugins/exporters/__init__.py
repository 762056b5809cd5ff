"""Built-in exporters, registered without importing them (`faceauth.components.lazy`)."""

import faceauth
from faceauth.components import Exporter, lazy


@faceauth.hookimpl
def faceauth_exporters() -> list[Exporter]:
    return [Exporter(name="onnx", build=lazy("faceauth.plugins.exporters.onnx_exporter:OnnxExporter"),
                     options=lazy("faceauth.plugins.exporters.onnx_exporter:OnnxOptions"),
                     description="ONNX with dynamic batch, metadata, onnx.checker and an onnxruntime parity check; "
                                 "quantize: int8 for static QDQ int8")]
