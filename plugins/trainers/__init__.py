"""Built-in trainers, registered without importing them (`faceauth.components.lazy`): PyTorch is
imported when a recipe uses a trainer, not when the trainers are listed."""

import faceauth
from faceauth.components import Trainer, lazy

_PACKAGE = "faceauth.plugins.trainers"


@faceauth.hookimpl
def faceauth_trainers() -> list[Trainer]:
    return [
        Trainer(name="classifier", build=lazy(f"{_PACKAGE}.classifier:build"),
                options=lazy(f"{_PACKAGE}.classifier:ClassifierOptions"),
                description="backbone + linear head with a logits loss; liveness metrics; log-odds export"),
        Trainer(name="embedding", build=lazy(f"{_PACKAGE}.embedding:build"),
                options=lazy(f"{_PACKAGE}.embedding:EmbeddingOptions"),
                description="face embeddings with a margin or triplet loss; verification metrics; embedding export"),
        Trainer(name="fusion", build=lazy(f"{_PACKAGE}.fusion:build"), options=lazy(f"{_PACKAGE}.fusion:FusionOptions"),
                description="MLP fusion of match and liveness scores on verification attempts; FAR/FRR/HTER/SFAR "
                            "beside AND and logistic-regression baselines; fusion ONNX export"),
        Trainer(name="lbp", build=lazy(f"{_PACKAGE}.lbp:build"), options=lazy(f"{_PACKAGE}.lbp:LbpOptions"),
                description="classical liveness baseline: colour LBP histograms + logistic regression; "
                            "score = log-odds of live; writes lbp.npz; ONNX export with the histograms in the graph"),
    ]
