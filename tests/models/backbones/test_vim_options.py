"""Vim's switches: causal vs bidirectional mixers, the backward dt_proj_b init, and
upstream's dense features (no class token, mixer outputs, SyncBN pyramid) against ours;
released-layout checkpoints into each; the config that follows upstream's segmentation
recipe. CPU; a 6-layer, 32-dim Vim wherever a forward runs."""
import argparse
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

import mmmambaout  # noqa: F401  (registrations)
from mmmambaout.models.backbones.vim import (MambaMixer, Vim, drop_cls_slot,
                                             resize_pos_embed)

REPO = Path(__file__).resolve().parents[3]
ARCH = dict(embed_dims=32, depth=6)
OUT = (1, 2, 3, 5)
BACKWARD = ('conv1d_b', 'x_proj_b', 'dt_proj_b', 'A_b_log', 'D_b')
UPSTREAM_DENSE = dict(with_cls_token=False, feature_source='mixer', pyramid_norm='SyncBN')


def _perturb_patch(x, row, col, p=16):
    x = x.clone()
    x[..., row * p:(row + 1) * p, col * p:(col + 1) * p] += 1.
    return x


# -- causal vs bidirectional -----------------------------------------------------------
@pytest.mark.parametrize('bidirectional', [False, True])
def test_mixer_causality(bidirectional):
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4, bidirectional=bidirectional).double()
    h = torch.randn(2, 12, 16, dtype=torch.float64)
    h2 = h.clone()
    h2[:, 7:] += torch.randn(2, 5, 16, dtype=torch.float64)
    y, y2 = m(h), m(h2)
    assert not torch.allclose(y[:, 7], y2[:, 7])
    if bidirectional:  # every token sees the later ones
        assert (y[:, :7] - y2[:, :7]).abs().amax(-1).min() > 1e-6
    else:
        assert torch.equal(y[:, :7], y2[:, :7])


def test_causal_backbone_outputs_ignore_later_tokens():
    """A 4x4 token grid, class token at sequence index 8. Changing patch (3, 1) (raster
    index 13) leaves the outputs of patches 0..12 and the class token unchanged in a causal
    model; a bidirectional one changes them all."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    x2 = _perturb_patch(x, 3, 1)
    for bidirectional in (False, True):
        dense = Vim(ARCH, out_indices=OUT, bidirectional=bidirectional).eval()
        cls = Vim(ARCH, out_type='cls_token', bidirectional=bidirectional).eval()
        with torch.no_grad():
            (_, _, s16, _), (_, _, s16b, _) = dense(x), dense(x2)   # stride-16 map, 4x4
            changed = (s16 - s16b).abs().amax(1).flatten()          # per raster token
            cls_changed = (cls(x)[0] - cls(x2)[0]).abs().max()
        assert changed[13] > 1e-4
        if bidirectional:
            assert changed[:13].min() > 1e-7 and cls_changed > 1e-6
        else:
            assert changed[:13].max() == 0 and cls_changed == 0
            assert changed[14:].min() > 1e-7  # later tokens do see it


def test_bidirectional_is_the_default_and_unchanged():
    model = Vim(ARCH, out_indices=OUT)
    assert (model.bidirectional, model.with_cls_token, model.feature_source,
            model.pyramid_norm) == (True, True, 'residual', 'LN')
    mixer = model.layers[0].mixer
    assert mixer.bidirectional and all(hasattr(mixer, n) for n in BACKWARD)
    keys = set(model.state_dict())
    assert {'cls_token', 'out_norms.0.weight', 'layers.0.mixer.dt_proj_b.bias'} <= keys


@pytest.fixture(scope='module')
def released_ckpt(tmp_path_factory):
    """A file in the released layout ({'model', 'args'}; upstream keys, head, 14x14 + the
    middle class slot), from a perturbed bidirectional classifier."""
    torch.manual_seed(3)
    src = Vim(ARCH, out_type='cls_token')
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = dict(src.state_dict(), **{'head.weight': torch.randn(10, 32),
                                      'head.bias': torch.randn(10)})
    path = tmp_path_factory.mktemp('vim') / 'vim_t_midclstok_76p1acc.pth'
    torch.save(dict(model=state, args=argparse.Namespace(model='vim_tiny_midclstok')), path)
    return path, state


def _load(path, **kwargs):
    model = Vim(ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model


@pytest.mark.parametrize('out_type', ['cls_token', 'pyramid'])
def test_released_weights_load_into_causal_and_bidirectional(released_ckpt, log, out_type):
    path, state = released_ckpt
    kwargs = dict(out_indices=OUT) if out_type == 'pyramid' else dict(out_type=out_type)
    for bidirectional in (True, False):
        model = _load(path, bidirectional=bidirectional, **kwargs)
        own = model.state_dict()
        for k, v in state.items():
            if k in own:
                assert torch.equal(own[k], v), k
        backward = [k for k in state if any(f'.mixer.{n}' in k for n in BACKWARD)]
        assert len(backward) == 7 * ARCH['depth']
        assert all((k in own) == bidirectional for k in backward)
    assert log.text() == ''  # no missing / unexpected keys: the left-out ones are logged
    assert 'backward branch: bidirectional=False' in log.text(logging.INFO)
    assert 'layers.0.mixer.conv1d_b.weight' in log.text(logging.INFO)


# -- dt_proj_b init ------------------------------------------------------------------
def test_dt_proj_b_init_upstream_and_mamba():
    torch.manual_seed(0)
    E, R = 256, 8                       # dim 128: dt_rank 8, d_inner 256
    up = MambaMixer(128)
    assert torch.equal(up.dt_proj_b.bias, torch.zeros(E))   # softplus(0) = ln 2 per channel
    ma = MambaMixer(128, dt_init_b='mamba')
    for m in (up, ma):
        for proj in (m.dt_proj, m.dt_proj_b):
            assert proj.weight.abs().max() <= R**-0.5
            assert proj.weight.std() > 0.5 * R**-0.5 / math.sqrt(3)  # ~U(+-R^-0.5), not 0
    for bias in (up.dt_proj.bias, ma.dt_proj.bias, ma.dt_proj_b.bias):
        dt = F.softplus(bias)            # log-uniform in [1e-3, 0.1]
        assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
        log_dt = dt.log()
        assert abs(log_dt.mean() - math.log(1e-2)) < 0.4      # midpoint of log range
        assert abs(log_dt.std() - math.log(100) / math.sqrt(12)) < 0.3
    assert not torch.equal(ma.dt_proj.bias, ma.dt_proj_b.bias)
    # through the backbone
    assert all(torch.equal(layer.mixer.dt_proj_b.bias, torch.zeros(64))
               for layer in Vim(ARCH, out_indices=OUT).layers)
    assert all(layer.mixer.dt_proj_b.bias.max() < 0     # softplus^-1(dt <= 0.1) < 0
               for layer in Vim(ARCH, out_indices=OUT, dt_init_b='mamba').layers)
    with pytest.raises(ValueError, match='dt_init_b'):
        MambaMixer(16, dt_init_b='zero')


# -- upstream's dense features against ours --------------------------------------------
@pytest.mark.parametrize('kwargs', [
    dict(with_cls_token=False), dict(pyramid_norm='SyncBN'),
    dict(UPSTREAM_DENSE, bidirectional=False)])
def test_dense_option_shapes(kwargs):
    torch.manual_seed(0)
    model = Vim(ARCH, out_indices=OUT, **kwargs).train()
    outs = model(torch.randn(2, 3, 61, 87))            # 4x6 tokens
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())  # none unused (DDP)


def _stream(model, x, with_cls):
    """Residual streams and mixer outputs of every layer, computed by hand."""
    t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    if with_cls:
        mid = t.shape[1] // 2
        t = torch.cat((t[:, :mid], model.cls_token.expand(len(t), -1, -1), t[:, mid:]), 1)
    r, streams, mixed = t + model.pos_embed, [], []
    for layer in model.layers:
        m = layer.mixer(layer.norm(r))
        r = r + m
        streams.append(r)
        mixed.append(m)
    return streams, mixed


def test_dense_options_change_what_they_claim():
    """At the training grid (no resize), the stride-16 output (of layer OUT[2] = 3) is:
    ours LN(the residual stream after the layer, class token removed); upstream's the
    layer's mixer output on a sequence without class token, not normalised."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    ours = Vim(ARCH, out_indices=OUT, img_size=64).eval()
    theirs = Vim(ARCH, out_indices=OUT, img_size=64, **UPSTREAM_DENSE).eval()
    assert ours.pos_embed.shape == (1, 17, 32) and theirs.pos_embed.shape == (1, 16, 32)
    assert not hasattr(theirs, 'cls_token')
    assert isinstance(theirs.pyramid[0].norm, torch.nn.SyncBatchNorm)
    assert not any(k.startswith('out_norms.') for k in theirs.state_dict())
    with torch.no_grad():
        streams, _ = _stream(ours, x, with_cls=True)
        f = drop_cls_slot(streams[OUT[2]]).transpose(1, 2).reshape(1, 32, 4, 4)
        torch.testing.assert_close(ours(x)[2], ours.out_norms[2](f))
        _, mixed = _stream(theirs, x, with_cls=False)
        f = mixed[OUT[2]].transpose(1, 2).reshape(1, 32, 4, 4)
        torch.testing.assert_close(theirs(x)[2], f)
        # each option alone changes the output
        for kwargs in (dict(with_cls_token=False), dict(feature_source='mixer')):
            other = Vim(ARCH, out_indices=OUT, img_size=64, **kwargs).eval()
            state = dict(ours.state_dict())
            if not other.with_cls_token:
                del state['cls_token']
                state['pos_embed'] = drop_cls_slot(state['pos_embed'])
            other.load_state_dict(state)
            assert not torch.allclose(other(x)[2], ours(x)[2], atol=1e-3)


@pytest.mark.parametrize('kwargs, match', [
    (dict(feature_source='hidden'), 'feature_source'),
    (dict(pyramid_norm='BN'), 'pyramid_norm'),
    (dict(out_type='cls_token', with_cls_token=False), 'with_cls_token=True'),
    (dict(out_type='cls_token', feature_source='mixer'), "out_type='pyramid'"),
])
def test_option_validation(kwargs, match):
    kwargs.setdefault('out_indices', OUT)
    with pytest.raises(ValueError, match=match):
        Vim(ARCH, **kwargs)


def test_released_weights_into_upstream_dense_options(released_ckpt, log):
    """No class token: its weight is left out (logged), the position embedding loses the
    middle slot (not slot 0, as upstream) and is resized to the grid."""
    path, state = released_ckpt
    model = _load(path, out_indices=OUT, img_size=(128, 96), **UPSTREAM_DENSE)
    expected = resize_pos_embed(drop_cls_slot(state['pos_embed']), (14, 14), (8, 6),
                                cls_slot=False)
    torch.testing.assert_close(model.pos_embed.data, expected)
    same = _load(path, out_indices=OUT, with_cls_token=False)     # 224: no resize
    torch.testing.assert_close(same.pos_embed.data, torch.cat(
        (state['pos_embed'][:, :98], state['pos_embed'][:, 99:]), 1))
    assert log.text() == ''
    info = log.text(logging.INFO)
    assert 'with_cls_token=False): cls_token' in info and 'resized from 14x14 to 8x6' in info


# -- the config that follows upstream's recipe -------------------------------------------
def test_upstream_recipe_config():
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmmambaout.utils.cli import disable_pretrained
    cfg = Config.fromfile(str(REPO / 'configs/upernet_vim_t_60k_ade20k_upstream.py'))
    backbone = cfg.model.backbone
    assert {k: backbone[k] for k in UPSTREAM_DENSE} == UPSTREAM_DENSE
    assert backbone.get('bidirectional', True) and backbone.init_cfg.checkpoint == \
        'vim_tiny_midclstok_in1k'
    assert cfg.train_cfg.max_iters == 60000 and cfg.param_scheduler[-1].end == 60000
    assert cfg.train_dataloader.batch_size * 4 == cfg.auto_scale_lr.base_batch_size == 32
    opt = cfg.optim_wrapper
    assert (opt.optimizer.lr, opt.optimizer.weight_decay) == (2e-4, 0.1)
    assert opt.constructor == 'MergedParamGroupsOptimWrapperConstructor'
    assert opt.inner_constructor == 'VimLayerDecayOptimWrapperConstructor'
    assert opt.paramwise_cfg.layer_decay_rate == 0.92
    # upstream's printed model (seg/tools/analysis_tools/vim-t-upernet.txt): 12,901,100
    # parameters, less its unused norm_f (192) and the 3072 extra position slots of the
    # 1024-pixel input its benchmark.py sets (3072 x 192)
    disable_pretrained(cfg.model)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 12_901_100 - 192 - 3072 * 192
    # the optimizer chain builds: layer decay over the 24 layers, then merged groups
    ow_cfg = cfg.optim_wrapper.to_dict()
    ow_cfg.update(type='OptimWrapper')      # AmpOptimWrapper wants CUDA
    ow_cfg.pop('loss_scale')
    optimizer = build_optim_wrapper(model, ow_cfg).optimizer
    lrs = {g['lr'] for g in optimizer.param_groups}
    assert max(lrs) == pytest.approx(2e-4) and min(lrs) == pytest.approx(2e-4 * 0.92**25)
    assert len(optimizer.param_groups) < 100
