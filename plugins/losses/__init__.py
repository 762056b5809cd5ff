"""Built-in losses, registered without importing them.

Each record points at its module's options class and builder through `faceauth.components.lazy`,
so listing the losses imports no PyTorch; a module is imported when a recipe uses its loss.
"""

from __future__ import annotations

import faceauth
from faceauth.components import Loss, lazy

__all__ = ["faceauth_losses"]

_PACKAGE = "faceauth.plugins.losses"


@faceauth.hookimpl
def faceauth_losses() -> list[Loss]:
    return [
        Loss(name="cross_entropy", build=lazy(f"{_PACKAGE}.cross_entropy:build"),
             options=lazy(f"{_PACKAGE}.cross_entropy:CrossEntropyOptions"), consumes="logits",
             description="softmax cross-entropy; class_weights balance live and spoof"),
        Loss(name="arcface", build=lazy(f"{_PACKAGE}.margin:build_arcface"),
             options=lazy(f"{_PACKAGE}.margin:ArcFaceOptions"), consumes="embeddings",
             description="additive angular margin softmax: s*cos(theta+m); owns the class centres"),
        Loss(name="cosface", build=lazy(f"{_PACKAGE}.margin:build_cosface"),
             options=lazy(f"{_PACKAGE}.margin:CosFaceOptions"), consumes="embeddings",
             description="additive cosine margin softmax: s*(cos(theta)-m); owns the class centres"),
        Loss(name="combined_margin", build=lazy(f"{_PACKAGE}.margin:build_combined_margin"),
             options=lazy(f"{_PACKAGE}.margin:CombinedMarginOptions"), consumes="embeddings",
             description="combined margin softmax: s*(cos(m1*theta+m2)-m3); owns the class centres"),
        Loss(name="partial_fc", build=lazy(f"{_PACKAGE}.partial_fc:build_partial_fc"),
             options=lazy(f"{_PACKAGE}.partial_fc:PartialFCOptions"), consumes="embeddings",
             description="combined margin softmax with class centres sharded over processes and sampled "
                         "negatives (Partial FC); for 10^5 to 10^6 identities"),
        Loss(name="triplet", build=lazy(f"{_PACKAGE}.triplet:build_triplet"),
             options=lazy(f"{_PACKAGE}.triplet:TripletOptions"), consumes="embeddings",
             description="batch-hard triplet loss on L2-normalised embeddings; needs P x K batches"),
    ]
