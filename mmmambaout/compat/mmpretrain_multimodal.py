"""mmpretrain 1.2.0 with transformers >= 5: ``import mmpretrain.models`` works again.

Written for: mmpretrain 1.2.0 with transformers >= 5 (with transformers < 5, or none,
nothing is needed and nothing changes; with another mmpretrain: warned about once, left
alone).

mmpretrain 1.2.0 imports its multimodal models (BLIP, ...) whenever transformers >= 4.28
is installed, and they no longer import against transformers 5, so
``import mmpretrain.models`` fails. We mark multimodal support off
(``mmpretrain.utils.dependency.WITH_MULTIMODAL = False``) before mmpretrain's models
load; those models then raise their own "install the multimodal extra" error.
"""
from ._version import installed_version, written_for

LIBRARY = 'mmpretrain'
WRITTEN_FOR = ('1.2.0', )


def multimodal_importable(transformers_version):
    """mmpretrain 1.2.0's multimodal models import against transformers 4.x only."""
    return transformers_version is None or int(transformers_version.split('.')[0]) < 5


def apply():
    """Switch mmpretrain's multimodal models off where they cannot import. Returns
    whether the change is in place."""
    if multimodal_importable(installed_version('transformers')):
        return False
    if not written_for(LIBRARY, WRITTEN_FOR, "mmmambaout's switch-off of mmpretrain's "
                       'multimodal models under transformers >= 5',
                       '`import mmpretrain.models` may fail'):
        return False
    import mmpretrain.utils.dependency
    mmpretrain.utils.dependency.WITH_MULTIMODAL = False
    return True
