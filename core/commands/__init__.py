"""The console scripts: ``faceauth-run``, ``faceauth-eval``, ``faceauth-export`` (`cli`),
``faceauth-verify`` (`verify`) and ``faceauth-predict`` (`predict`). The top layer: nothing imports it."""
