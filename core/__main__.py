"""``python -m faceauth RECIPE [key=value ...]``: the same as ``faceauth-run`` (and what torchrun launches)."""

import sys

from faceauth.commands.cli import run_main

sys.exit(run_main())
