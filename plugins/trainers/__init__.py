"""Built-in trainers."""

import faceauth
from faceauth.components import Trainer
from faceauth.plugins.trainers import classifier, embedding, fusion, texture


@faceauth.hookimpl
def faceauth_trainers() -> list[Trainer]:
    return [*classifier.trainers(), *embedding.trainers(), *fusion.trainers(), *texture.trainers()]
