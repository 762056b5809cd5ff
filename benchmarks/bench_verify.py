"""Latency of one verification (one enrolment image, one probe image): the ONNX `Authenticator` against
the same models run in eager PyTorch, on face crops (no detection, which both would share).

Both engines do the whole decision: prepare each model's input, embed the enrolment image and the
probe (ResNet-18 embedding model), the log-odds of live of the probe (ResNet-18 liveness model), the probe's
quality, the fusion MLP. The PyTorch side prepares inputs with the trainers' evaluation transform.
Each engine is timed in its own block (onnxruntime thread spinning disabled, see
`faceauth.io.onnx.onnx_session`), and "template" rows reuse a stored enrolment template.

    python benchmarks/bench_verify.py [--size 64] [--threads 2] [--repeats 30] [--out /tmp/fusion_figures.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
from pathlib import Path

# PyTorch's OpenMP threads wait passively too (onnxruntime's spinning is off in faceauth's sessions):
# on a busy 2-core machine a spinning barrier turns every descheduled thread into a long stall.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from common import median_seconds, table
from PIL import Image


def build_models(folder: Path, size: int) -> dict[str, object]:
    """Untrained embedding, liveness and fusion models (latency does not depend on the weights), exported
    by the real exporter into `folder` as a fusion run leaves them; returns the PyTorch modules."""
    from faceauth.config.build import build_component
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.deploy.features import feature_names
    from faceauth.deploy.models import file_sha256
    from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
    from faceauth.plugins.trainers.classifier import Classifier
    from faceauth.training.run import Run

    registry = load_registry()
    common = {"backbone": {"name": "resnet18", "input_size": size}, "export": {"name": "onnx"}}
    recipes = {
        "embedding": {**common, "data": {"name": "demo_identities"}, "loss": {"name": "arcface"},
                      "trainer": {"name": "embedding"}},
        "liveness": {**common, "data": {"name": "demo"}, "loss": {"name": "cross_entropy"},
                     "trainer": {"name": "classifier"}},
        "fusion": {**common, "data": {"name": "demo_attempts"}, "loss": {"name": "arcface"},
                   "trainer": {"name": "fusion"}},
    }
    exporter = OnnxExporter(OnnxOptions())
    modules, records = {}, []
    torch.manual_seed(0)
    for role in ("embedding", "liveness", "fusion"):
        recipe = load_recipe(None, registry=registry, base=recipes[role])
        run = Run(recipe, registry, folder)
        trainer = build_component(registry, recipe, "trainer")
        if role == "fusion":
            model = trainer.build_model(4)
            model.mean.copy_(torch.tensor([0.9, 0.5, 5.0, 0.5]))  # typical features: scores stay off 0 and 1
            model.threshold, model.features, model.components = 0.5, feature_names(1, 1, True), records
        else:
            model = run.build("backbone") if role == "embedding" else Classifier(run.build("backbone"), 2)
            model.threshold = 0.5
        model.eval()
        path = folder / ("model.onnx" if role == "fusion" else f"{role}.onnx")
        exporter.export(trainer.export_bundle(run, model), path)
        if role != "fusion":
            records.append({"role": role, "file": path.name, "sha256": file_sha256(path), "threshold": 0.5})
        modules[role] = model
    return modules


class EagerVerifier:
    """The same decision as `Authenticator.verify` with the PyTorch modules (what serving without ONNX does)."""

    def __init__(self, modules: dict[str, object]):
        from faceauth.training.transforms import eval_transform

        self.modules = modules
        self.embed_transform = eval_transform(modules["embedding"].preprocess)
        self.live_transform = eval_transform(modules["liveness"].backbone.preprocess)

    def enroll(self, image: np.ndarray) -> torch.Tensor:
        x = self.embed_transform(Image.fromarray(image))[None]
        return torch.nn.functional.normalize(self.modules["embedding"](x), dim=1)[0]

    def verify(self, template: torch.Tensor, probe: np.ndarray) -> tuple[bool, float]:
        from faceauth.data import live_log_odds
        from faceauth.deploy.features import quality_features

        pil = Image.fromarray(probe)
        embedding = torch.nn.functional.normalize(self.modules["embedding"](self.embed_transform(pil)[None]), dim=1)[0]
        match = torch.dot(torch.nn.functional.normalize(template, dim=0), embedding)
        live = live_log_odds(self.modules["liveness"](self.live_transform(pil)[None]))[0]
        quality = torch.from_numpy(quality_features(probe))
        score = float(self.modules["fusion"](torch.cat([match[None], live[None], quality])[None])[0])
        return score >= 0.5, score


def onnx_seconds(models: Path, enrolled: np.ndarray, probe: np.ndarray, repeats: int,
                 threads: int) -> tuple[float, float, float]:
    """Median seconds of `Authenticator.verify` from images and from a stored template, and its score;
    the sessions live only while they are timed."""
    from faceauth.deploy.authenticator import Authenticator

    auth = Authenticator.from_dir(models, detect=False, threads=threads)
    template = auth.enroll([enrolled])
    full = median_seconds(lambda: auth.verify([enrolled], probe), repeats)
    stored = median_seconds(lambda: auth.verify(template, probe), repeats)
    return full, stored, auth.verify(template, probe).score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input size of both component models (the recipe's 64)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of both engines")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fusion_figures.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from faceauth.plugins.datasets.demo_render import render_face, sample_identity

    rng = np.random.default_rng(0)
    person = sample_identity(rng)
    enrolled, probe = render_face(person, rng, 112), render_face(person, rng, 112)
    rows = [("path", "eager PyTorch ms", "onnxruntime ms", "speed-up")]
    with tempfile.TemporaryDirectory() as tmp:
        modules = build_models(Path(tmp), args.size)
        eager = EagerVerifier(modules)
        with torch.inference_mode():
            template = eager.enroll(enrolled)
            eager_full = median_seconds(lambda: eager.verify(eager.enroll(enrolled), probe), args.repeats)
            eager_template = median_seconds(lambda: eager.verify(template, probe), args.repeats)
            eager_score = eager.verify(template, probe)[1]
        gc.collect()
        ort_full, ort_template, ort_score = onnx_seconds(Path(tmp), enrolled, probe, args.repeats, args.threads)
        scores = (eager_score, ort_score)
    for name, e, o in (("verify (enrol + probe)", eager_full, ort_full), ("verify (stored template)", eager_template,
                                                                           ort_template)):
        rows.append((name, f"{e * 1e3:.2f}", f"{o * 1e3:.2f}", f"{e / o:.2f}x"))
    text = table(rows)
    note = (f"ResNet-18 embedding + ResNet-18 liveness at {args.size}x{args.size}, fusion MLP 4-16-16-1; 112x112 face "
            f"crops; torch {torch.__version__}, {args.threads} thread(s) per engine, OMP_WAIT_POLICY="
            f"{os.environ['OMP_WAIT_POLICY']}; load average {os.getloadavg()[0]:.1f}; "
            f"median of {args.repeats}; scores {scores[0]:.6f} (PyTorch) and {scores[1]:.6f} (onnxruntime)")
    print(text)
    print(note)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(f"## bench_verify.py --size {args.size} --threads {args.threads}\n\n```\n{text}\n```\n{note}\n\n")


if __name__ == "__main__":
    main()
