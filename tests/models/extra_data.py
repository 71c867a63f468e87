"""Synthetic stand-ins for the extra data sources a family's config names (`FamilyConfig.data_sources`), for the
tests that build every family generically: the stages load real sources; pure-model tests only need images of
the family's shape."""

from __future__ import annotations

import torch

from genops.data.tensors import ImageSet
from genops.models.family import Family


def attach_synthetic_data(family: Family, n_train: int = 8, n_test: int = 4, seed: int = 0) -> Family:
    """Random uint8 images in the family's shape (labels cycling over its classes) for every extra role."""
    gen = torch.Generator().manual_seed(seed)
    classes = max(family.spec.num_classes, 1)

    def image_set(n: int) -> ImageSet:
        images = torch.randint(0, 256, (n, *family.spec.shape), generator=gen, dtype=torch.uint8)
        return ImageSet(images, torch.arange(n) % classes)

    for role in family.cfg.data_sources():
        family.attach_data(role, image_set(n_train), image_set(n_test))
    return family
