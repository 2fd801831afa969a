"""Vim backbone: the bidirectional mixer against a plain recurrence, shapes at odd sizes,
freezing, checkpointing, parameter counts, upstream-format checkpoints (middle class-token
position slot, resized), the classifier mapping, Mask R-CNN / UperNet train steps and the
configs. CPU; small custom archs wherever a forward runs."""
import argparse
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import OptimWrapper

import mmmambaout  # noqa: F401  (mmcv op backend + registrations)
import mmmambaout.checkpoint
from mmmambaout.checkpoint import VIM_RELEASE_URL_PREFIX, load_vim_state_dict
from mmmambaout.models.backbones.vim import MambaMixer, RMSNorm, Vim, resize_pos_embed
from mmmambaout.utils.synthetic import det_batch, seg_batch

REPO = Path(__file__).resolve().parents[3]
SMALL = dict(embed_dims=32, depth=4)          # forward tests
OUT4 = (0, 1, 2, 3)
# Exact parameter counts with the 1000-class head (upstream's layout); the paper and the
# README round them to 7M / 26M / 98M.
PARAMS_WITH_HEAD = dict(tiny=7_148_008, small=25_796_584, base=97_598_440)
PAPER_PARAMS_M = dict(tiny=7, small=26, base=98)


# -- the norm ----------------------------------------------------------------------------
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_rms_norm_against_float64(dtype, tol):
    """x / sqrt(mean(x^2) + eps) * weight in float64: output and the gradients of x and
    the weight, relative max error; output in the input's dtype."""
    g = torch.Generator().manual_seed(0)
    norm = RMSNorm(48)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
    x = (torch.randn(2, 7, 48, generator=g) * 3).to(dtype).requires_grad_()
    gout = torch.randn(2, 7, 48, generator=g)
    y = norm(x)
    assert y.dtype == dtype
    gx, gw = torch.autograd.grad((y.float() * gout).sum(), [x, norm.weight])
    x64, w64 = x.detach().double().requires_grad_(), norm.weight.detach().double().requires_grad_()
    ref = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * w64
    rx, rw = torch.autograd.grad((ref * gout.double()).sum(), [x64, w64])
    for got, want in ((y, ref), (gx, rx), (gw, rw)):
        err = ((got.double() - want).abs().max() / want.abs().max()).item()
        assert err < tol, err


# -- the mixer ---------------------------------------------------------------------------
def _direction_by_recurrence(m, xz, backward):
    """One Mamba direction written from the equations: causal depthwise conv, SiLU,
    x_proj -> (dt, B, C), delta = softplus(dt_proj(dt)), h_t = exp(delta A) h_{t-1} +
    delta B_t x_t, y_t = C_t . h_t + D x_t, gated by silu(z). ``xz``: (B, L, 2E)."""
    s = '_b' if backward else ''
    conv, x_proj, dt_proj = (getattr(m, n + s) for n in ('conv1d', 'x_proj', 'dt_proj'))
    A = -torch.exp(getattr(m, 'A_b_log' if backward else 'A_log'))
    D = getattr(m, 'D_b' if backward else 'D')
    x, z = xz.chunk(2, dim=-1)                                    # (B, L, E)
    L, k = x.shape[1], conv.weight.shape[-1]
    xp = F.pad(x, (0, 0, k - 1, 0))
    x = torch.stack([(xp[:, t:t + k] * conv.weight[:, 0].t()).sum(1) for t in range(L)], 1)
    x = F.silu(x + conv.bias)
    dt, Bm, Cm = torch.split(x_proj(x), [m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(dt_proj(dt))                              # (B, L, E)
    h = x.new_zeros(x.shape[0], x.shape[2], m.d_state)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + \
            delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + D * x[:, t])
    return torch.stack(ys, 1) * F.silu(z)


def test_mixer_is_mean_of_forward_and_flipped_backward():
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4).double()
    with torch.no_grad():  # make the two directions really different
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    h = torch.randn(2, 11, 16, dtype=torch.float64)
    xz = m.in_proj(h)
    y_f = _direction_by_recurrence(m, xz, backward=False)
    y_b = _direction_by_recurrence(m, xz.flip(1), backward=True).flip(1)
    expected = m.out_proj((y_f + y_b) / 2)
    torch.testing.assert_close(m(h), expected, atol=1e-10, rtol=1e-9)
    # and the directions are not interchangeable (the test would catch a swap)
    assert not torch.allclose(m.out_proj(y_f), expected, atol=1e-3)


def test_causal_mixer_is_the_forward_direction():
    """bidirectional=False: Mamba's mixer, out_proj of the forward direction (no / 2)."""
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4, bidirectional=False).double()
    assert {n.split('.')[0] for n, _ in m.named_parameters()} == {
        'in_proj', 'conv1d', 'x_proj', 'dt_proj', 'A_log', 'D', 'out_proj'}
    h = torch.randn(2, 11, 16, dtype=torch.float64)
    expected = m.out_proj(_direction_by_recurrence(m, m.in_proj(h), backward=False))
    torch.testing.assert_close(m(h), expected, atol=1e-10, rtol=1e-9)


# -- shapes, freezing, checkpointing -----------------------------------------------------
@pytest.mark.parametrize('size', [(97, 131), (224, 224), (48, 160), (16, 16), (8, 20)])
def test_pyramid_shapes_at_any_size(size):
    torch.manual_seed(0)
    model = Vim(SMALL, out_indices=OUT4).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    h, w = (-(-s // 16) for s in size)  # padded to the patch grid
    expected = [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (-(-h // 2), -(-w // 2))]
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert all(o.shape[:2] == (1, 32) and torch.isfinite(o).all() for o in outs)
    assert model.out_channels == (32, ) * 4


def test_cls_token_output_and_position():
    """The class token sits in the middle of the sequence (index h*w // 2) and the
    classifier output is norm_f of the last stream there."""
    torch.manual_seed(0)
    model = Vim(SMALL, out_type='cls_token', img_size=64).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        (out, ) = model(x)
        assert out.shape == (2, 32)
        # the token of the 4x5 grid goes to index 20 // 2 = 10
        tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        pos = resize_pos_embed(model.pos_embed, (4, 4), (4, 5))
        seq = torch.cat((tokens[:, :10], model.cls_token.expand(2, -1, -1), tokens[:, 10:]),
                        1) + pos
        r = seq.float()
        for layer in model.layers:
            r, _ = layer(r)
        torch.testing.assert_close(model.norm_f(r)[:, 10], out)


def test_layers_after_last_output_not_built():
    model = Vim(dict(embed_dims=32, depth=6), out_indices=(0, 1, 2, 3))
    assert len(model.layers) == 4 and model.num_layers == 6
    assert not hasattr(model, 'norm_f')


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), 'unknown Vim arch'),
    (dict(arch=dict(embed_dims=32)), 'needs'),
    (dict(arch=dict(SMALL, heads=3)), 'needs'),
    (dict(arch=SMALL, out_indices=(1, 2, 3)), 'four'),
    (dict(arch=SMALL, out_indices=(0, 1, 2, 4)), 'ints in'),
    (dict(arch=SMALL, out_indices=(0, 2, 1, 3)), 'increasing'),
    (dict(arch=SMALL, out_indices=OUT4, frozen_stages=5), 'frozen_stages'),
    (dict(arch=SMALL, out_indices=OUT4, drop_path_rate=1.), 'drop_path_rate'),
    (dict(arch=SMALL, out_type='avg'), 'out_type'),
    (dict(arch=SMALL, out_indices=OUT4, patch_stride=8), 'stride-16'),
])
def test_argument_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Vim(**kwargs)


def test_frozen_stages():
    model = Vim(SMALL, out_indices=OUT4, frozen_stages=2)
    model.train()
    frozen = [model.cls_token, model.pos_embed, *model.patch_embed.parameters(),
              *model.layers[0].parameters(), *model.layers[1].parameters()]
    assert all(not p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert all(p.requires_grad for p in model.out_norms.parameters())
    assert not model.layers[1].training and model.layers[2].training
    before = {id(p): p.detach().clone() for p in frozen}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(o.sum() for o in model(torch.randn(1, 3, 40, 56))).backward()
    opt.step()
    assert all(torch.equal(p, before[id(p)]) for p in frozen)


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    ref = Vim(SMALL, out_indices=OUT4, drop_path_rate=0.2).train()
    cpm = Vim(SMALL, out_indices=OUT4, drop_path_rate=0.2, with_cp=True).train()
    cpm.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 40, 56)
    results = []
    for model in (ref, cpm):
        torch.manual_seed(1)  # same drop-path masks
        outs = model(x)
        sum((o * o).mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    (o1, g1), (o2, g2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b)
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], msg=n)


def test_bf16_autocast_keeps_fp32_stream():
    torch.manual_seed(0)
    model = Vim(SMALL, out_indices=OUT4)
    x = torch.randn(1, 3, 45, 61)
    ref = model(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
        sum(o.float().sum() for o in outs).backward()
    for a, b in zip(outs, ref):
        assert torch.isfinite(a).all()
        assert (a.float() - b).abs().max() < 0.1
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_param_counts_with_head(arch):
    model = Vim(arch, out_type='cls_token')
    n = sum(p.numel() for p in model.parameters()) + model.embed_dims * 1000 + 1000
    assert n == PARAMS_WITH_HEAD[arch]
    assert round(n / 1e6) == PAPER_PARAMS_M[arch]
    assert len(model.layers) == 24 and model.patch_embed.proj.kernel_size == (16, 16)


@pytest.mark.parametrize('registry', ['mmdet', 'mmseg', 'mmpretrain'])
def test_registered(registry):
    import importlib
    models = importlib.import_module(f'{registry}.registry').MODELS
    assert isinstance(models.build(dict(type='Vim', arch=SMALL, out_indices=OUT4)), Vim)


# -- position embeddings and checkpoints -------------------------------------------------
def test_resize_pos_embed_keeps_middle_cls_slot():
    dim, cls_value = 8, 7.
    pos = torch.ones(1, 14 * 14 + 1, dim)
    pos[:, 98] = cls_value          # 196 // 2: where the released weights keep it
    out = resize_pos_embed(pos, (14, 14), (6, 9))
    assert out.shape == (1, 55, dim)
    torch.testing.assert_close(out[:, 27], torch.full((1, dim), cls_value))
    # the grid slots never see the class-token value (upstream's slot-0 handling would)
    torch.testing.assert_close(torch.cat((out[:, :27], out[:, 28:]), 1),
                               torch.ones(1, 54, dim))
    assert resize_pos_embed(pos, (14, 14), (14, 14)) is pos


@pytest.fixture(scope='module')
def upstream_ckpt(tmp_path_factory):
    """A file in the released format: {'model': upstream keys + head, 'optimizer',
    'args': argparse.Namespace}, 224 resolution (14x14 + middle class slot)."""
    torch.manual_seed(3)
    src = Vim(SMALL, out_type='cls_token')
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = dict(src.state_dict())
    state['head.weight'] = torch.randn(10, 32)
    state['head.bias'] = torch.randn(10)
    path = tmp_path_factory.mktemp('vim') / 'vim_t_midclstok_76p1acc.pth'
    args = argparse.Namespace(model='vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_'
                              'embed_with_midclstok_div2', input_size=224)
    torch.save(dict(model=state, optimizer={}, epoch=299, args=args), path)
    return path, src, state


def test_upstream_checkpoint_keys_match_ours(upstream_ckpt):
    _, src, state = upstream_ckpt
    assert 'layers.0.mixer.A_b_log' in state and 'layers.3.mixer.x_proj_b.weight' in state
    assert {k for k in state if not k.startswith('head.')} == set(src.state_dict())


def test_pretrained_same_resolution_classifier_matches(upstream_ckpt):
    path, src, _ = upstream_ckpt
    model = Vim(SMALL, out_type='cls_token',
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], src.eval()(x)[0])


def test_pretrained_dense_other_resolution(upstream_ckpt, log):
    path, src, state = upstream_ckpt
    model = Vim(SMALL, out_indices=OUT4, img_size=(128, 96), frozen_stages=1,
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert model.pos_embed.shape == (1, 8 * 6 + 1, 32)
    torch.testing.assert_close(model.pos_embed.data,
                               resize_pos_embed(state['pos_embed'], (14, 14), (8, 6)))
    torch.testing.assert_close(model.pos_embed[:, 24], state['pos_embed'][:, 98])
    torch.testing.assert_close(model.layers[3].mixer.D_b.data, state['layers.3.mixer.D_b'])
    assert not model.cls_token.requires_grad  # freezing re-applied after loading
    assert 'resized from 14x14 to 8x6' in log.text(logging.INFO)
    assert log.text() == ''  # head / norm_f expected away; pyramid expected missing
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 100, 70))
    assert [tuple(o.shape[-2:]) for o in outs] == [(28, 20), (14, 10), (7, 5), (4, 3)]


def test_pretrained_reports_wrong_keys(tmp_path, upstream_ckpt, log):
    _, _, state = upstream_ckpt
    bad = {k: v for k, v in state.items() if k != 'layers.1.mixer.A_log'}
    bad['layers.1.mixer.bogus'] = torch.zeros(1)
    path = tmp_path / 'bad.pth'
    torch.save(dict(model=bad), path)
    model = Vim(SMALL, out_type='cls_token', init_cfg=dict(type='Pretrained',
                                                            checkpoint=str(path)))
    model.init_weights()
    assert 'missing keys' in log.text() and 'layers.1.mixer.A_log' in log.text()
    assert 'unexpected keys' in log.text() and 'layers.1.mixer.bogus' in log.text()
    big = Vim(dict(embed_dims=48, depth=4), out_type='cls_token',
              init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='does not fit'):
        big.init_weights()


def test_our_dense_checkpoint_roundtrip(upstream_ckpt):
    """An mmdet/mmseg checkpoint of ours (``backbone.*``) loads back as a backbone."""
    _, src, state = upstream_ckpt
    ours = {'backbone.' + k: v for k, v in state.items() if not k.startswith('head.')}
    ours['neck.conv.weight'] = torch.zeros(1)
    loaded = load_vim_state_dict(dict(state_dict=ours))
    assert set(loaded) == set(src.state_dict())


# -- the classifier config and the release loader ----------------------------------------
@pytest.mark.parametrize('cfg_name', ['vim_t_in1k.py', 'vim_s_in1k.py'])
def test_classifier_config_and_release_loader(cfg_name, upstream_ckpt, monkeypatch):
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmpretrain.registry import MODELS
    path, src, state = upstream_ckpt
    cfg = Config.fromfile(str(REPO / 'configs' / cfg_name))
    assert cfg.load_from.startswith(VIM_RELEASE_URL_PREFIX)
    real = mmmambaout.checkpoint.load_checkpoint_file  # the URL's file is faked
    monkeypatch.setattr(mmmambaout.checkpoint, 'load_checkpoint_file', lambda name, *a, **k:
                        real(str(path) if name == cfg.load_from else name, *a, **k))
    assert [t['type'] for t in cfg.test_pipeline][1:3] == ['ResizeEdge', 'CenterCrop']
    assert cfg.test_pipeline[1]['scale'] == 256 and cfg.test_pipeline[2]['crop_size'] == 224
    init_default_scope('mmpretrain')
    cfg.model.backbone.arch = SMALL
    cfg.model.head.update(in_channels=32, num_classes=10)
    model = MODELS.build(cfg.model).eval()
    converted = CheckpointLoader.load_checkpoint(cfg.load_from, map_location='cpu')['state_dict']
    model.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        expected = F.linear(src.eval()(x)[0], state['head.weight'], state['head.bias'])
    torch.testing.assert_close(logits, expected)


def test_every_vim_config_builds():
    from mmengine.registry import init_default_scope
    names = sorted(p.name for p in (REPO / 'configs').glob('*vim*.py'))
    assert names == ['mask_rcnn_vim_s_1x_coco.py', 'mask_rcnn_vim_t_1x_coco.py',
                     'upernet_vim_s_160k_ade20k.py', 'upernet_vim_t_160k_ade20k.py',
                     'upernet_vim_t_60k_ade20k_upstream.py', 'vim_s_in1k.py',
                     'vim_t_in1k.py']
    import importlib
    for name in names:
        cfg = Config.fromfile(str(REPO / 'configs' / name))
        scope = ('mmdet' if name.startswith('mask_rcnn') else
                 'mmseg' if name.startswith('upernet') else 'mmpretrain')
        init_default_scope(scope)
        model = importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)
        assert isinstance(model.backbone, Vim), name
        arch = 'small' if '_s_' in name else 'tiny'
        assert model.backbone.embed_dims == {'tiny': 192, 'small': 384}[arch]
        if scope != 'mmpretrain':
            assert cfg.model.backbone.init_cfg.checkpoint == f'vim_{arch}_midclstok_in1k'
            assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
            keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
            assert all(keys[k].decay_mult == 0 for k in
                       ('norm', 'pos_embed', 'cls_token', 'A_log', 'A_b_log', 'mixer.D'))


def test_metafile_lists_the_configs():
    import yaml
    meta = yaml.safe_load((REPO / 'configs/metafiles/vim.yml').read_text())
    configs = {m.get('Config') for m in meta['Models']}
    for p in (REPO / 'configs').glob('*vim*.py'):
        assert f'configs/{p.name}' in configs, p.name


# -- inside Mask R-CNN and UperNet -------------------------------------------------------
H, W = 61, 87  # odd on purpose


def _train_step(model, data):
    model.train()
    frozen = model.backbone.patch_embed.proj.weight.detach().clone()
    trained = model.backbone.layers[3].mixer.in_proj.weight.detach().clone()
    losses = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-2)))
    assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
    assert torch.equal(model.backbone.patch_embed.proj.weight, frozen)
    assert not torch.equal(model.backbone.layers[3].mixer.in_proj.weight, trained)


def _small_backbone(cfg_backbone, **kwargs):
    cfg_backbone.update(arch=SMALL, out_indices=OUT4, init_cfg=None, frozen_stages=0,
                        **kwargs)
    return cfg_backbone


def test_mask_rcnn_train_step():
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(str(REPO / 'configs/mask_rcnn_vim_t_1x_coco.py'))
    _small_backbone(cfg.model.backbone, img_size=64)
    cfg.model.neck.update(in_channels=[32] * 4, out_channels=32)
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    cfg.model.roi_head.bbox_roi_extractor.out_channels = 32
    cfg.model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64)
    cfg.model.roi_head.mask_roi_extractor.out_channels = 32
    cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32)
    cfg.model.train_cfg.rcnn.sampler.num = 32
    cfg.model.train_cfg.rpn_proposal.max_per_img = 100
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    data = det_batch(2, (W, H), objects=2, seed=0)
    _train_step(model, data)


def test_upernet_train_step():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(REPO / 'configs/upernet_vim_t_160k_ade20k.py'))
    _small_backbone(cfg.model.backbone, with_cp=True, img_size=(H, W))
    cfg.model.data_preprocessor.size = (H, W)
    cfg.model.decode_head.update(in_channels=[32] * 4, channels=16, num_classes=5,
                                 norm_cfg=dict(type='BN', requires_grad=True))
    cfg.model.auxiliary_head.update(in_channels=32, channels=16, num_classes=5,
                                    norm_cfg=dict(type='BN', requires_grad=True))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    data = seg_batch(2, (W, H), num_classes=5, seed=1)
    _train_step(model, data)
