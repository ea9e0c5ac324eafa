"""Face detectors and face classifiers for ``[classifier]`` (see :mod:`diffkit.audit.labellers`).

Adapters for the tools of Fair Diffusion's protocol (Friedrich et al. 2023, repository
ml-research/Fair-Diffusion, ``utils.py``): dlib's CNN face detector (``mmod_human_face_detector.dat``)
and FairFace's ResNet-34 (``res34_fair_align_multi_7_20190809.pt``: 18 outputs, race 0–6, gender
7 = male, 8 = female, age 9–17; Kärkkäinen & Joo 2021). Neither is installed with diffkit, nor are
their weights downloaded: install ``dlib`` and fetch the two files on a machine that may, then::

    [classifier]
    kind = "face_crop"
    model = "diffkit.audit.faces:fairface"
    pretrained = "/models/res34_fair_align_multi_7_20190809.pt"
    detector = "diffkit.audit.faces:dlib_cnn"
    detector_weights = "/models/mmod_human_face_detector.dat"
    label_map = { female = 8, male = 7 }
    crop_size = 224
    crop_margin = 0.25

FairFace was trained on dlib-aligned crops (5-point landmarks, padding 0.25); diffkit crops the
detector's box with the same margin without the landmark alignment, so its labels can differ from
Fair Diffusion's on tilted faces (docs/howto/audit.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MissingPackageError, WeightsMissingError

__all__ = ["FAIRFACE_LABEL_MAP", "dlib_cnn", "fairface"]

#: FairFace's gender outputs in its 18-way head (``predict.py`` of dchen236/FairFace: outputs[7:9]
#: are Male, Female).
FAIRFACE_LABEL_MAP = {"female": 8, "male": 7}


def dlib_cnn(weights: str | None = None, *, max_size: int = 800, upsample: int = 1):
    """dlib's CNN face detector, called as Fair Diffusion's ``face_existing`` calls it: the image
    resized so its longer side is *max_size*, one upsampling; boxes in the input's pixels."""
    try:
        import dlib
    except ImportError as e:
        raise MissingPackageError(
            "the dlib face detector needs dlib; fix: pip install dlib (a C++ build), or name "
            "another detector in classifier.detector"
        ) from e
    if not weights:
        raise WeightsMissingError(
            "classifier.detector_weights is not set; fix: point it at dlib's "
            "mmod_human_face_detector.dat (dlib.net/files)"
        )
    net = dlib.cnn_face_detection_model_v1(str(weights))

    def detect(image: np.ndarray) -> list[tuple[float, float, float, float]]:
        h, w = image.shape[:2]
        s = max_size / max(h, w)
        img = dlib.resize_image(np.ascontiguousarray(image), rows=int(round(h * s)), cols=int(round(w * s)))
        return [
            (d.rect.left() / s, d.rect.top() / s, d.rect.right() / s, d.rect.bottom() / s) for d in net(img, upsample)
        ]

    return detect


def fairface(weights: str | None = None) -> Any:
    """FairFace's ResNet-34 (torchvision's, 18 outputs) with the weights file *weights* (a state
    dict; loaded with ``torch.load(weights_only=True)``, which unpickles tensors only)."""
    import torch

    try:
        from torchvision.models import resnet34
    except ImportError as e:
        raise MissingPackageError("FairFace needs torchvision; fix: pip install torchvision") from e
    if not weights:
        raise WeightsMissingError(
            "classifier.pretrained is not set; fix: point it at FairFace's res34_fair_align_multi_7_20190809.pt"
        )
    net = resnet34(weights=None)
    net.fc = torch.nn.Linear(net.fc.in_features, 18)
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()
