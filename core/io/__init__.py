"""Files, media and the terminal: atomic writes and locks (`paths`), image and video decoding (`images`,
`video`), ONNX sessions and model metadata (`onnx`), progress and one-line errors (`console`).

The lowest layer above the plugin API: it imports nothing else of faceauth and no PyTorch.
"""
