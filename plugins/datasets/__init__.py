"""Built-in datasets: one registration hook gathering the records of every dataset module."""

import faceauth
from faceauth.components import Dataset
from faceauth.plugins.datasets import (attempts, casia_fasd, celeba_spoof, clips, demo_clips, folder, identity,
                                       identity_demo, ijb, nuaa, recordio, replay_attack)

__all__ = ["faceauth_datasets"]

_MODULES = (folder, casia_fasd, replay_attack, celeba_spoof, nuaa, clips, demo_clips, identity, identity_demo, recordio,
            attempts, ijb)


@faceauth.hookimpl
def faceauth_datasets() -> list[Dataset]:
    return [record for module in _MODULES for record in module.datasets()]
