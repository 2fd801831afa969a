"""Lazily padded gt masks read exactly as mmdet's eagerly padded ones."""
import mmmambaout  # noqa: F401  (mmcv op backend before mmdet)
import numpy as np
import pytest
import torch
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.structures import InstanceData

from mmmambaout.models.data_preprocessors import (LazyMaskPadDetDataPreprocessor,
                                                  LazyPaddedBitmapMasks)


def bitmap(n=3, h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    return BitmapMasks((rng.random((n, h, w)) > 0.5).astype(np.uint8), h, w)


@pytest.mark.parametrize('pad_val', [0, 255])
def test_reads_as_mmdet_padding(pad_val):
    masks = bitmap()
    lazy = LazyPaddedBitmapMasks(masks, 64, 96, pad_val=pad_val)
    eager = masks.pad((64, 96), pad_val=pad_val)
    assert len(lazy) == 3 and (lazy.height, lazy.width) == (64, 96)
    assert lazy._padded is None                        # nothing padded yet
    assert np.array_equal(lazy.masks, eager.masks)
    assert np.array_equal(lazy[[2, 0]].masks, eager[[2, 0]].masks)
    assert np.array_equal(lazy.to_ndarray(), eager.to_ndarray())
    index = torch.tensor([1, 1, 0])
    assert torch.equal(lazy.to_padded_tensor(torch.device('cpu'), index),
                       torch.from_numpy(eager.masks)[index])
    empty = LazyPaddedBitmapMasks(bitmap(n=0), 64, 96)
    assert empty.masks.shape == (0, 64, 96) and len(empty) == 0


def test_cannot_pad_to_a_smaller_size():
    with pytest.raises(ValueError, match='cannot pad masks of 37x53 to the smaller 32x96'):
        LazyPaddedBitmapMasks(bitmap(), 32, 96)


def batch(masks):
    sizes = [(37, 53), (30, 61)]
    samples = []
    for i, (h, w) in enumerate(sizes):
        s = DetDataSample(metainfo=dict(img_shape=(h, w)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[1., 2., 9., 9.]] * 2),
                                      labels=torch.tensor([0, 1]),
                                      masks=masks(h, w, i))
        samples.append(s)
    inputs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
def test_preprocessor_output_equals_mmdet(kind):
    def masks(h, w, i):
        if kind == 'bitmap':
            return bitmap(n=2, h=h, w=w, seed=i)
        return PolygonMasks([[np.array([1., 1., 20., 1., 20., 15.])]] * 2, h, w)
    kwargs = dict(mean=[1., 2., 3.], std=[2., 2., 2.], pad_size_divisor=32, pad_mask=True)
    torch.manual_seed(0)
    ref = DetDataPreprocessor(**kwargs)(batch(masks), True)
    torch.manual_seed(0)
    ours = LazyMaskPadDetDataPreprocessor(**kwargs)(batch(masks), True)
    assert torch.equal(ref['inputs'], ours['inputs'])
    for a, b in zip(ref['data_samples'], ours['data_samples']):
        ma, mb = a.gt_instances.masks, b.gt_instances.masks
        assert type(mb) is (LazyPaddedBitmapMasks if kind == 'bitmap' else PolygonMasks)
        assert (ma.height, ma.width) == (mb.height, mb.width) == a.batch_input_shape
        assert np.array_equal(ma.to_ndarray(), mb.to_ndarray())
