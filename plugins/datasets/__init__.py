"""Built-in datasets, registered without importing them.

Each record points at its module's options class and builder through `faceauth.components.lazy`,
so listing the datasets imports no PyTorch; a module is imported when a recipe uses its dataset.
"""

import faceauth
from faceauth.components import Dataset, lazy

__all__ = ["faceauth_datasets"]

_PACKAGE = "faceauth.plugins.datasets"


def _dataset(name: str, module: str, build: str, options: str, description: str) -> Dataset:
    return Dataset(name=name, build=lazy(f"{_PACKAGE}.{module}:{build}"), options=lazy(f"{_PACKAGE}.{module}:{options}"),
                   description=description)


@faceauth.hookimpl
def faceauth_datasets() -> list[Dataset]:
    return [
        _dataset("folder", "folder", "build_folder", "FolderOptions",
                 "root/{train,val,test}/{live,spoof}/ (spoof/<attack type>/ optional); no root: demo set"),
        _dataset("demo", "folder", "build_demo", "DemoOptions",
                 "procedurally rendered live, print and replay faces, generated once into the cache"),
        _dataset("casia_fasd", "casia_fasd", "build", "CasiaFasdOptions",
                 "CASIA-FASD videos (root/{train,test}_release/<subject>/*.avi), face-cropped; "
                 "faces from the recipe's detector or root/face-locations/"),
        _dataset("replay_attack", "replay_attack", "build", "ReplayAttackOptions",
                 "Idiap Replay-Attack videos (root/{train,devel,test}/{real,attack/*}/*.mov), "
                 "face-cropped; boxes from root/face-locations/ or the recipe's detector"),
        _dataset("celeba_spoof", "celeba_spoof", "build", "CelebASpoofOptions",
                 "CelebA-Spoof images (root/Data, root/metas/intra_test); detector 'boxes' uses the shipped "
                 "boxes; subject-disjoint validation"),
        _dataset("nuaa", "nuaa", "build", "NuaaOptions",
                 "NUAA Photograph Imposter Database (ClientRaw/ImposterRaw or the face variants); "
                 "train sessions 01+02, test 03, or the shipped lists"),
        _dataset("video_folder", "clips", "build_video_folder", "VideoFolderOptions",
                 "clips of root/{train,val,test}/{live,spoof}/ videos (spoof/<attack type>/ optional); "
                 "face crops with the recipe's detector (whole_frame: videos of face crops)"),
        _dataset("demo_clips", "demo_clips", "build_demo_clips", "DemoClipsOptions",
                 "procedural face videos: live (blinks, head motion, light drift), rigid print and "
                 "flickering replay; rendered once into the cache, read as clips"),
        _dataset("identity_folder", "identity", "build_identity_folder", "IdentityFolderOptions",
                 "root/<identity>/*.jpg (CASIA-WebFace, VGGFace2, LFW); held-out identities validate"),
        _dataset("demo_identities", "identity_demo", "build_demo_identities", "DemoIdentitiesOptions",
                 "procedurally rendered people, several captures each, generated once into the cache"),
        _dataset("recordio", "recordio", "build_recordio", "RecordIOOptions",
                 "insightface MXNet RecordIO pack (train.rec/.idx/property), read without MXNet"),
        _dataset("attempt_folder", "attempts", "build_attempt_folder", "AttemptFolderOptions",
                 "verification attempts (genuine, impostor, spoof) from root/{train,val,test}/<identity>/"
                 "{live,spoof}/"),
        _dataset("demo_attempts", "attempts", "build_demo_attempts", "DemoAttemptsOptions",
                 "verification attempts on procedurally rendered people with print/replay attacks, "
                 "rendered once into the cache"),
        _dataset("ijb", "ijb", "build_ijb", "IJBOptions",
                 "IJB-B / IJB-C 1:1 template verification (loose crops, 5-point landmarks); a test set"),
    ]
