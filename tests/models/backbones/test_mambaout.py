"""MambaOut backbone: parity with timm, shapes, freezing, checkpointing, pretrained loading."""
import logging
import re
import runpy
from pathlib import Path

import pytest
import torch

import mmmambaout  # noqa: F401  (registers the models)
from mmmambaout.checkpoint import checkpoint_filter_fn, load_mambaout_state_dict
from mmmambaout.models.backbones.mambaout import ARCH_SETTINGS, MambaOut
from mmmambaout.models.heads import MambaOutClsHead

timm = pytest.importorskip('timm')

REPO = Path(__file__).resolve().parents[3]
# Paper, Table 1: parameters with the classification head, in millions.
PAPER_PARAMS_M = dict(femto=7.3, kobe=9.1, tiny=26.5, small=48.5, base=84.8)
ODD = (97, 131)


@pytest.fixture(scope='module')
def image():
    torch.manual_seed(1)
    return torch.randn(2, 3, *ODD)


@pytest.fixture(scope='module')
def small_image():
    torch.manual_seed(2)
    return torch.randn(1, 3, 45, 61)


def build_classifier(arch='femto'):
    backbone = MambaOut(arch, out_indices=(3, ), norm_out=False).eval()
    head = MambaOutClsHead(1000, backbone.dims[-1]).eval()
    return backbone, head


def split(state_dict):
    backbone = {k: v for k, v in state_dict.items() if not k.startswith('head.')}
    head = {k[5:]: v for k, v in state_dict.items() if k.startswith('head.')}
    return backbone, head


# -- parity with timm --------------------------------------------------------------------
@pytest.mark.parametrize('fmt', ['timm', 'official'])
def test_logits_match_timm(timm_femto, femto_official_state_dict, image, fmt):
    sd = timm_femto.state_dict()
    if fmt == 'official':
        sd = femto_official_state_dict
        assert 'downsample_layers.0.conv1.weight' in sd and 'norm.weight' in sd
    backbone, head = build_classifier()
    bsd, hsd = split(checkpoint_filter_fn(sd))
    assert str(backbone.load_state_dict(bsd)) == '<All keys matched successfully>'
    assert str(head.load_state_dict(hsd)) == '<All keys matched successfully>'
    with torch.no_grad():
        ours, ref = head(backbone(image)), timm_femto(image)
    assert (ours - ref).abs().max() < 1e-4


def test_stage_outputs_match_timm_features_only(timm_femto, image):
    feats = timm.create_model('mambaout_femto', features_only=True).eval()
    sd = {re.sub(r'^stages\.(\d+)\.', r'stages_\1.', k): v
          for k, v in timm_femto.state_dict().items() if not k.startswith('head.')}
    feats.load_state_dict(sd)
    backbone = MambaOut('femto', norm_out=False).eval()
    backbone.load_state_dict(split(checkpoint_filter_fn(timm_femto.state_dict()))[0])
    with torch.no_grad():
        ours, ref = backbone(image), feats(image)
    assert len(ours) == len(ref) == 4
    for o, r in zip(ours, ref):
        assert o.shape == r.permute(0, 3, 1, 2).shape
        assert (o - r.permute(0, 3, 1, 2)).abs().max() < 1e-4


def test_checkpoint_filter_fn_is_idempotent(timm_femto, femto_official_state_dict):
    once = checkpoint_filter_fn(femto_official_state_dict)
    assert checkpoint_filter_fn(once).keys() == once.keys()
    assert checkpoint_filter_fn(timm_femto.state_dict()).keys() == once.keys()


# -- architecture ------------------------------------------------------------------------
@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_params_match_paper(arch):
    backbone, head = build_classifier(arch)
    n = sum(p.numel() for m in (backbone, head) for p in m.parameters()) / 1e6
    assert abs(n - PAPER_PARAMS_M[arch]) <= 0.05, n


@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_shapes(arch):
    model = MambaOut(arch).eval()
    dims = ARCH_SETTINGS[arch]['dims']
    sizes = [(224, 224), (65, 97)]  # odd sizes: (97, 131) in the parity tests
    if arch in ('femto', 'tiny'):
        sizes += [(512, 512)]
    with torch.no_grad():
        for h, w in sizes:
            outs = model(torch.randn(1, 3, h, w))
            assert len(outs) == 4
            for i, o in enumerate(outs):
                eh, ew = h, w
                for _ in range(i + 2):
                    eh, ew = (eh + 1) // 2, (ew + 1) // 2
                assert o.shape == (1, dims[i], eh, ew), (h, w, i, o.shape)
                assert o.is_contiguous()


def test_detection_size():
    """COCO's 1333x800 (odd stride-32 multiples); the shape logic is arch-independent."""
    model = MambaOut(dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape[2:]) for o in outs] == [(200, 334), (100, 167), (50, 84), (25, 42)]


def test_out_indices_and_norms():
    model = MambaOut('femto', out_indices=(-1, 1)).eval()
    assert model.out_indices == (1, 3) and model.out_channels == (96, 288)
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3') and not hasattr(model, 'norm0')
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [96, 288]
    # the output norm normalises over channels
    y = outs[0].permute(0, 2, 3, 1)
    assert torch.allclose(y.mean(-1), torch.zeros(()), atol=1e-4)
    plain = MambaOut('femto', out_indices=2, norm_out=False)
    assert not any(n.startswith('norm') for n, _ in plain.named_children())


def test_custom_arch_and_drop_path():
    model = MambaOut(dict(depths=[1, 2], dims=[16, 32]), out_indices=(0, 1), drop_path_rate=0.3)
    assert model.num_stages == 2
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0.
             for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0., 0.15, 0.3])
    outs = model(torch.randn(2, 3, 33, 47))
    assert [o.shape for o in outs] == [(2, 16, 9, 12), (2, 32, 5, 6)]


def test_block_structure():
    block = MambaOut('tiny').stages[0].blocks[0]
    assert block.fc1.weight.shape == (2 * 256, 96) and block.fc2.weight.shape == (96, 256)
    assert block.conv.weight.shape == (96, 1, 7, 7) and block.conv.groups == 96
    assert block.norm.eps == 1e-6
    assert not any('gamma' in n or '.ls' in n for n, _ in block.named_parameters())
    base = MambaOut('base').stages
    assert [s.blocks[0].fc2.in_features for s in base] == [341, 682, 1365, 2048]


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), "unknown MambaOut arch 'huge'; valid archs: femto, kobe, tiny, small, base"),
    (dict(arch=dict(depths=[1, 2])), "exactly the keys 'depths' and 'dims'"),
    (dict(arch=dict(depths=[1, 2], dims=[8])), 'equal length'),
    (dict(arch=dict(depths=[1, 0], dims=[8, 8])), 'positive ints'),
    (dict(out_indices=(4, )), r'out_indices entries must be ints in \[-4, 3\]'),
    (dict(out_indices=(1, -3)), 'duplicates'),
    (dict(frozen_stages=5), r'frozen_stages must be in \[-1, 4\]'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
    (dict(with_cp=(4, )), r'with_cp must be a bool or a sequence of stage indices in \[-4, 3\]'),
    (dict(with_cp='yes'), 'with_cp must be a bool'),
    (dict(conv_layout='nhwc'), "conv_layout must be one of \\('auto', 'channels_last', 'nchw'\\)"),
])
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MambaOut(**kwargs)
    with pytest.raises(TypeError):
        MambaOut(arch=3)


def test_arch_aliases():
    assert MambaOut('T').dims == MambaOut('tiny').dims == (96, 192, 384, 576)


def test_frozen_stages():
    model = MambaOut(dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32]), frozen_stages=2)
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1], model.norm0, model.norm1]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not sub.training for sub in m.modules())
    for m in [model.stages[2], model.stages[3], model.norm2, model.norm3]:
        assert all(p.requires_grad for p in m.parameters())
        assert all(sub.training for sub in m.modules())
    stem_only = MambaOut(dict(depths=[1, 1], dims=[8, 16]), out_indices=(0, 1), frozen_stages=0).train()
    assert not any(p.requires_grad for p in stem_only.stem.parameters())
    assert all(p.requires_grad for p in stem_only.stages.parameters())


@pytest.mark.parametrize('with_cp', [True, (0, ), (0, -1)])
def test_with_cp_same_outputs_and_grads(with_cp):
    torch.manual_seed(0)
    arch = dict(depths=[2, 1, 2, 1], dims=[8, 16, 24, 32])
    ref = MambaOut(arch).train()
    cp_model = MambaOut(arch, with_cp=with_cp).train()
    expected = {True: [True] * 4, (0, ): [True, False, False, False],
                (0, -1): [True, False, False, True]}[with_cp]
    assert [s.with_cp for s in cp_model.stages] == expected
    cp_model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 45, 61)
    outs = [m(x) for m in (ref, cp_model)]
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)
    for m, o in zip((ref, cp_model), outs):
        sum((t * t).sum() for t in o).backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), cp_model.named_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), n


def test_bf16_autocast():
    model = MambaOut(dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    for a, b in zip(ref, low):
        assert b.dtype == torch.bfloat16
        assert (a - b.float()).abs().max() < 0.2


def test_default_init():
    model = MambaOut(dict(depths=[1, 1], dims=[64, 128]), out_indices=1)
    model.init_weights()
    w = model.stages[1].blocks[0].fc1.weight
    assert abs(w.std().item() - 0.02) < 0.003  # trunc_normal_ std .02 (cut at +-2, as official)
    assert model.stages[1].blocks[0].fc1.bias.abs().sum() == 0


@pytest.mark.parametrize('registry', ['mmdet', 'mmseg', 'mmpretrain'])
def test_registered(registry):
    import importlib
    models = importlib.import_module(f'{registry}.registry').MODELS
    model = models.build(dict(type='MambaOut', arch='femto', out_indices=(3, )))
    assert isinstance(model, MambaOut)


# -- pretrained loading ------------------------------------------------------------------
_TIMM_FEATS = {}


def _assert_same_backbone(model, timm_model, image):
    key = (id(timm_model), id(image))
    if key not in _TIMM_FEATS:
        with torch.no_grad():
            _TIMM_FEATS[key] = timm_model.forward_features(image).permute(0, 3, 1, 2)
    with torch.no_grad():
        assert (model.eval()(image)[-1] - _TIMM_FEATS[key]).abs().max() < 1e-4


def test_pretrained_official_pth(tmp_path, timm_femto, femto_official_state_dict, small_image, log):
    path = tmp_path / 'mambaout_femto.pth'
    torch.save(femto_official_state_dict, path)
    model = MambaOut('femto', out_indices=(3, ), norm_out=False,
                     init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert log.text() == ''  # head keys dropped silently, nothing missing
    _assert_same_backbone(model, timm_femto, small_image)


def test_pretrained_timm_safetensors_dense(tmp_path, timm_femto, small_image, log):
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in timm_femto.state_dict().items()}, str(path))
    model = MambaOut('femto', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert log.text() == ''
    # the dense output norms are not in the checkpoint: reported at INFO level
    assert 'norm0.weight' in log.text(logging.INFO)
    model.norm3.reset_parameters()  # identity-like LN on top of the stage output
    with torch.no_grad():
        out = model.eval()(small_image)[-1]
        feats = timm_femto.forward_features(small_image)
        ref = torch.nn.functional.layer_norm(feats, (288, ), eps=1e-6).permute(0, 3, 1, 2)
    assert (out - ref).abs().max() < 1e-4


def test_pretrained_prefix_and_converter(tmp_path, timm_femto, femto_official_state_dict,
                                         small_image, log):
    src = tmp_path / 'official.pth'
    torch.save(femto_official_state_dict, src)
    dst = tmp_path / 'converted.pth'
    tool = runpy.run_path(str(REPO / 'tools/model_converters/mambaout2mmmambaout.py'))
    tool['main']([str(src), str(dst)])
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert all(k.startswith(('backbone.', 'head.')) for k in converted)
    assert {'head.norm.weight', 'head.fc1.weight', 'head.hidden_norm.weight',
            'head.fc2.weight'} <= set(converted)
    for prefix in ('backbone.', 'backbone', None):  # explicit, without dot, auto-detected
        model = MambaOut('femto', out_indices=(3, ), norm_out=False,
                         init_cfg=dict(type='Pretrained', checkpoint=str(dst), prefix=prefix))
        model.init_weights()
        _assert_same_backbone(model, timm_femto, small_image)
    assert log.text() == ''
    # a detector-style checkpoint with other modules beside the backbone
    det = dict(converted, **{'neck.lateral.weight': torch.zeros(1)})
    torch.save({'state_dict': det, 'meta': {}}, tmp_path / 'det.pth')
    model = MambaOut('femto', out_indices=(3, ), norm_out=False, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'det.pth'), prefix='backbone.'))
    model.init_weights()
    _assert_same_backbone(model, timm_femto, small_image)


def test_pretrained_reports_wrong_keys(tmp_path, timm_femto, log):
    sd = checkpoint_filter_fn(timm_femto.state_dict())
    sd.pop('stages.0.blocks.0.fc1.weight')
    sd['stages.0.blocks.0.extra.weight'] = torch.zeros(3)
    torch.save(sd, tmp_path / 'partial.pth')
    model = MambaOut('femto', out_indices=(3, ), norm_out=False,
                     init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'partial.pth')))
    model.init_weights()
    text = log.text()
    assert 'missing keys' in text and 'stages.0.blocks.0.fc1.weight' in text
    assert 'unexpected keys' in text and 'stages.0.blocks.0.extra.weight' in text

    torch.save({'foo.weight': torch.zeros(2)}, tmp_path / 'wrong.pth')
    model = MambaOut('femto', init_cfg=dict(type='Pretrained',
                                            checkpoint=str(tmp_path / 'wrong.pth')))
    with pytest.raises(RuntimeError, match='no key of checkpoint .* matches the model'):
        model.init_weights()
    tiny = MambaOut('tiny', init_cfg=dict(type='Pretrained',
                                          checkpoint=str(tmp_path / 'partial.pth')))
    with pytest.raises(RuntimeError, match='wrong arch'):
        tiny.init_weights()
    with pytest.raises(ValueError, match="starts with prefix 'backbone.'"):
        load_mambaout_state_dict(str(tmp_path / 'partial.pth'), prefix='backbone.')
    with pytest.raises(FileNotFoundError):
        load_mambaout_state_dict(str(tmp_path / 'missing.pth'))


def test_conv_layout_reaches_every_block():
    """``conv_layout`` is each Gated CNN block's; outputs equal the default's (CPU:
    channels-last either way for 'auto', so compare 'nchw' at 1e-5, float32)."""
    torch.manual_seed(0)
    default = MambaOut(dict(depths=[1, 2], dims=[8, 16]), out_indices=(0, 1))
    nchw = MambaOut(dict(depths=[1, 2], dims=[8, 16]), out_indices=(0, 1), conv_layout='nchw')
    nchw.load_state_dict(default.state_dict())
    assert {b.conv_layout for s in nchw.stages for b in s.blocks} == {'nchw'}
    x = torch.randn(1, 3, 40, 56)
    for a, b in zip(default(x), nchw(x)):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
