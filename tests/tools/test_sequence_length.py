"""tools/analysis/sequence_length.py: the paper's ViT-S figures, and token grids equal to
the backbones' real feature maps."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'analysis'))
from sequence_length import table  # noqa: E402


@pytest.mark.parametrize('shape,length,ratio', [
    ((224, 224), 196, 0.085),     # ImageNet
    ((800, 1280), 4000, 1.736),   # COCO
    ((512, 512), 1024, 0.444),    # ADE20K
])
def test_paper_vit_small_figures(shape, length, ratio):
    """arXiv 2405.07992 Sec. 3: ViT-S, tau = 6 x 384 = 2304; L 196 / 4000 / 1024."""
    (row, ) = table('vit_small', shape)[1]
    assert (row['L'], row['tau']) == (length, 2304)
    assert row['ratio'] == pytest.approx(ratio, abs=5e-4)
    # attention's quadratic share of the block is L / (L + 6D): one half exactly at L = tau
    assert row['block_quadratic'] == pytest.approx(length / (length + 2304))


def test_mambaout_stage_grids_match_the_features():
    """Odd sizes exercise the convolutions' rounding; the grids are the stage outputs."""
    from mmmambaout.models.backbones import MambaOut
    text, rows = table('configs/mask_rcnn_mambaout_t_1x_coco.py', (70, 93))
    backbone = MambaOut('tiny', drop_path_rate=0.)
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 70, 93))
    assert [r['grid'] for r in rows] == [tuple(f.shape[2:]) for f in feats]
    assert [r['D'] for r in rows] == [96, 192, 384, 576]
    assert '| stage 2 (9 blocks) |' in text


def test_vim_counts_the_class_token():
    from mmmambaout.models.backbones import Vim
    (row, ) = table('vim_tiny', (512, 512))[1]
    assert row['grid'] == (32, 32) and row['L'] == 32 * 32 + 1 and row['D'] == 192
    vim = Vim('tiny')
    assert tuple(vim.patch_embed.proj(torch.zeros(1, 3, 512, 512)).shape[2:]) == (32, 32)
