"""Built-in datasets."""

from faceauth.plugins.datasets.folder import faceauth_datasets

__all__ = ["faceauth_datasets"]
