"""Built-in trainers."""

import faceauth
from faceauth.components import Trainer
from faceauth.plugins.trainers import classifier, embedding


@faceauth.hookimpl
def faceauth_trainers() -> list[Trainer]:
    return [*classifier.trainers(), *embedding.trainers()]
