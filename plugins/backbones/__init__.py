"""Built-in backbones: torchvision ResNets, ArcFace IResNets, MobileFaceNet, FaceNet, and the liveness
networks CDCN and MiniFAS.

This registration module imports no PyTorch: each record points at its module's options class and
builder through `faceauth.components.lazy`, imported when a recipe uses the component.
"""

import faceauth
from faceauth.components import Backbone, lazy

__all__ = ["faceauth_backbones"]

_PACKAGE = "faceauth.plugins.backbones"
IRESNET_DEPTHS = (18, 34, 50, 100)  # the keys of iresnet.DEPTHS (tests check they agree)


@faceauth.hookimpl
def faceauth_backbones() -> list[Backbone]:
    return [
        *(Backbone(name=f"resnet{depth}", build=lazy(f"{_PACKAGE}.resnet:ResNetFeatures", depth),
                   preprocess=lazy(f"{_PACKAGE}.resnet:preprocess"),
                   options=lazy(f"{_PACKAGE}.resnet:ResNetOptions"),
                   description=f"torchvision ResNet-{depth}, pooled features ({512 if depth < 50 else 2048}-d)")
          for depth in (18, 34, 50)),
        *(Backbone(name=f"iresnet{depth}", build=lazy(f"{_PACKAGE}.iresnet:IResNet", depth),
                   preprocess=lazy(f"{_PACKAGE}.iresnet:preprocess"),
                   options=lazy(f"{_PACKAGE}.iresnet:IResNetOptions"),
                   description=f"ArcFace IResNet-{depth} (insightface arcface_torch r{depth}), 112x112, "
                               "512-d embedding by default")
          for depth in IRESNET_DEPTHS),
        Backbone(name="mobilefacenet", build=lazy(f"{_PACKAGE}.mobilefacenet:build"),
                 preprocess=lazy(f"{_PACKAGE}.mobilefacenet:preprocess"),
                 options=lazy(f"{_PACKAGE}.mobilefacenet:MobileFaceNetOptions"),
                 description="MobileFaceNet (insightface arcface_torch mbf), 112x112, 512-d embedding by default"),
        Backbone(name="facenet", build=lazy(f"{_PACKAGE}.facenet:build"),
                 preprocess=lazy(f"{_PACKAGE}.facenet:preprocess"),
                 options=lazy(f"{_PACKAGE}.facenet:FaceNetOptions"),
                 description="FaceNet Inception-ResNet-v1 (facenet-pytorch), 160x160, L2-normalised 512-d embedding"),
        Backbone(name="lstm", build=lazy(f"{_PACKAGE}.temporal:build"),
                 preprocess=lazy(f"{_PACKAGE}.temporal:preprocess"),
                 options=lazy(f"{_PACKAGE}.temporal:LstmOptions"),
                 description="temporal: a frame encoder (backbone.encoder, any backbone) + LSTM over clips "
                             "[N, T, 3, H, W]; optional start from a liveness checkpoint"),
        Backbone(name="cdcn", build=lazy(f"{_PACKAGE}.cdcn:build"),
                 preprocess=lazy(f"{_PACKAGE}.cdcn:preprocess"),
                 options=lazy(f"{_PACKAGE}.cdcn:CdcnOptions"),
                 description="central difference convolution network (CDCN-style, theta option), from scratch; "
                             "feature map at input/16 for pixel-wise supervision"),
        Backbone(name="minifas", build=lazy(f"{_PACKAGE}.minifas:build"),
                 preprocess=lazy(f"{_PACKAGE}.minifas:preprocess"),
                 options=lazy(f"{_PACKAGE}.minifas:MiniFasOptions"),
                 description="mobile liveness network under 0.5 M parameters (MiniFASNet-sized), 80x80, "
                             "depthwise-separable; feature map at input/16 for pixel-wise supervision"),
    ]
