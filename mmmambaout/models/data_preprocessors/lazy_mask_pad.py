"""Ground-truth masks padded to the batch shape only when someone reads them.

mmdet's ``DetDataPreprocessor`` pads every image's bitmap masks to the batch input shape
with NumPy on the host, each training step (a full copy of every mask; its host time:
docs/training_speed.md). A mask head that builds its targets
on the GPU (:class:`~mmmambaout.models.heads.OnDeviceTargetFCNMaskHead`) only needs the
masks of the positive proposals' objects, and can pad those on the device.

:class:`LazyPaddedBitmapMasks` keeps the unpadded array and reports the padded size;
reading ``.masks`` (what any other consumer does) pads on the host then, once, with
mmdet's own ``BitmapMasks.pad``, so the values anyone sees are unchanged.
:class:`LazyMaskPadDetDataPreprocessor` is ``DetDataPreprocessor`` with that instead of
the eager padding of ``BitmapMasks`` (polygons are untouched, as upstream).
"""
import torch
import torch.nn.functional as F
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.registry import MODELS
from mmdet.structures.mask import BitmapMasks


def upload_masks(masks, device) -> torch.Tensor:
    """A ``(n, h, w)`` uint8 NumPy array of masks as a tensor on ``device`` (from pinned
    memory, asynchronously, for CUDA)."""
    masks = torch.from_numpy(masks)
    if device.type == 'cuda':
        masks = masks.pin_memory()
    return masks.to(device, non_blocking=True)


class LazyPaddedBitmapMasks(BitmapMasks):
    """``BitmapMasks`` of size ``(height, width)`` holding masks of a smaller size that
    are padded (bottom and right, with ``pad_val``) on first read of ``.masks``."""

    def __init__(self, masks: BitmapMasks, height: int, width: int, pad_val: int = 0):
        if masks.height > height or masks.width > width:
            raise ValueError(f'cannot pad masks of {masks.height}x{masks.width} to the '
                             f'smaller {height}x{width}')
        self.unpadded = masks.masks
        self.height, self.width, self.pad_val = height, width, pad_val
        self._padded = None

    @property
    def masks(self):
        if self._padded is None:
            self._padded = BitmapMasks(self.unpadded, *self.unpadded.shape[1:]).pad(
                (self.height, self.width), pad_val=self.pad_val).masks
        return self._padded

    def __len__(self):
        return len(self.unpadded)

    def to_padded_tensor(self, device, index=None) -> torch.Tensor:
        """The padded masks (``index``: a subset, a LongTensor on ``device``) as a uint8
        tensor on ``device``: the unpadded ones are uploaded (pinned, asynchronously from
        the host) and padded there."""
        masks = upload_masks(self.unpadded, device)
        if index is not None:
            masks = masks.index_select(0, index)
        pad = (0, self.width - masks.shape[-1], 0, self.height - masks.shape[-2])
        return F.pad(masks, pad, value=self.pad_val)


@MODELS.register_module()
class LazyMaskPadDetDataPreprocessor(DetDataPreprocessor):
    """``DetDataPreprocessor`` that pads bitmap gt masks lazily (see the module doc)."""

    def pad_gt_masks(self, batch_data_samples) -> None:
        if 'masks' not in batch_data_samples[0].gt_instances:
            return
        for sample in batch_data_samples:
            masks = sample.gt_instances.masks
            if type(masks) is BitmapMasks:
                sample.gt_instances.masks = LazyPaddedBitmapMasks(
                    masks, *sample.batch_input_shape, pad_val=self.mask_pad_value)
            else:
                sample.gt_instances.masks = masks.pad(sample.batch_input_shape,
                                                      pad_val=self.mask_pad_value)
