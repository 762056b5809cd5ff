"""The built-in recipes, shipped as package data: `faceauth-run NAME` runs recipes/NAME.yaml, `--list` lists them."""
