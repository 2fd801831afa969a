"""Every config in configs/ parses, builds its model (pretrained init off) and runs one
forward + backward on a tiny synthetic input on CPU; the paper configs have the paper's
parameter counts."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import mmmambaout  # noqa: F401
from mmmambaout.utils.cli import disable_pretrained
from mmmambaout.utils.synthetic import batch_for

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def build(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    disable_pretrained(cfg.model)
    if cfg.default_scope == 'mmseg':  # pad the tiny input to itself, not to 512x512
        cfg.model.data_preprocessor.size = (64, 64)
    __import__(f'{cfg.default_scope}.models')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # leave no global scope
        model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def test_configs_found():
    names = {osp.basename(p) for p in CONFIGS}
    for size in 'tsb':
        assert f'mask_rcnn_mambaout_{size}_1x_coco.py' in names
        assert f'upernet_mambaout_{size}_160k_ade20k.py' in names


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_trains_one_step(path):
    cfg, model = build(path)
    model.train()
    torch.manual_seed(0)
    data = batch_for(cfg, batch=2, det_size=(96, 64), seg_size=(64, 64), cls_size=(64, 64),
                     objects=2)
    data = model.data_preprocessor(data, True)
    loss, log_vars = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# the paper's Tables 2 and 3 (M parameters), within 0.5M
PAPER_PARAMS = {
    'configs/mask_rcnn_mambaout_t_1x_coco.py': 43, 'configs/mask_rcnn_mambaout_s_1x_coco.py': 65,
    'configs/mask_rcnn_mambaout_b_1x_coco.py': 100,
    'configs/upernet_mambaout_t_160k_ade20k.py': 54,
    'configs/upernet_mambaout_s_160k_ade20k.py': 76,
    'configs/upernet_mambaout_b_160k_ade20k.py': 112,
}


@pytest.mark.parametrize('path,millions', sorted(PAPER_PARAMS.items()))
def test_paper_parameter_counts(path, millions):
    cfg = Config.fromfile(osp.join(ROOT, path))
    disable_pretrained(cfg.model)
    __import__(f'{cfg.default_scope}.models')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - millions) <= 0.5, f'{path}: {count:.2f}M vs paper {millions}M'


def test_recipe_of_the_paper_configs():
    det = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn_mambaout_t_1x_coco.py'))
    assert det.train_cfg.max_epochs == 12
    assert det.optim_wrapper.type == 'AmpOptimWrapper' and det.optim_wrapper.loss_scale == 'dynamic'
    assert det.optim_wrapper.optimizer.type == 'AdamW' and det.optim_wrapper.optimizer.lr == 1e-4
    assert det.optim_wrapper.optimizer.weight_decay == 0.05
    assert det.param_scheduler[0].end == 1000 and det.param_scheduler[1].milestones == [8, 11]
    assert det.train_dataloader.batch_size * 8 == det.auto_scale_lr.base_batch_size == 16
    assert det.model.backbone.drop_path_rate == 0.3
    assert det.model.backbone.init_cfg.checkpoint.endswith('mambaout_tiny.pth')
    seg = Config.fromfile(osp.join(ROOT, 'configs/upernet_mambaout_b_160k_ade20k.py'))
    assert seg.train_cfg.max_iters == 160000 and seg.model.backbone.drop_path_rate == 0.6
    assert seg.model.test_cfg.mode == 'slide' and seg.optim_wrapper.optimizer.lr == 1e-4


def test_demo_configs_use_the_generators_classes():
    from mmmambaout.datasets.demo_data import DEMO_ADE_METAINFO, DEMO_METAINFO
    det = Config.fromfile(osp.join(ROOT, 'configs/demo/mask_rcnn_mambaout_demo.py'))
    seg = Config.fromfile(osp.join(ROOT, 'configs/demo/upernet_mambaout_demo.py'))
    assert tuple(det.metainfo.classes) == DEMO_METAINFO['classes']
    assert [tuple(c) for c in det.metainfo.palette] == [tuple(c) for c in DEMO_METAINFO['palette']]
    assert tuple(seg.metainfo.classes) == DEMO_ADE_METAINFO['classes']
    assert det.model.roi_head.bbox_head.num_classes == len(DEMO_METAINFO['classes'])
    assert seg.model.decode_head.num_classes == len(DEMO_ADE_METAINFO['classes'])
