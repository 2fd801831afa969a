"""One place that registers a model class in every OpenMMLab registry that needs it.

A backbone used by Mask R-CNN (mmdet), UperNet (mmseg) and an ImageNet classifier
(mmpretrain) must be found by ``type='MambaOut'`` in each of their ``MODELS``
registries; registering the same class object three times keeps one definition.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

ALL_MODEL_REGISTRIES = (MMDET_MODELS, MMSEG_MODELS, MMPRETRAIN_MODELS)


def register_model(cls=None, *, registries=ALL_MODEL_REGISTRIES):
    """Class decorator: register ``cls`` under its own name in ``registries``."""

    def _register(klass):
        for registry in registries:
            registry.register_module(module=klass)
        return klass

    return _register if cls is None else _register(cls)
