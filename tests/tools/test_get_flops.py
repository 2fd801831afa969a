"""tools/analysis/get_flops.py: MACs and parameters against the MambaOut paper's numbers,
our ops' handles, and its error path."""
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TOOL = 'tools/analysis/get_flops.py'

# MambaOut paper (arXiv 2405.07992v3) Table 2 (Mask R-CNN 1x, MACs at 800x1280) and Table 3
# (UperNet 160k, MACs at 512x2048), MambaOut-T; the same figures are quoted in
# configs/metafiles/mambaout.yml ("Paper Results Source"). (shape, GMACs, M params, parts)
PAPER_DENSE = {
    'configs/mask_rcnn_mambaout_t_1x_coco.py':
    ((800, 1280), 262, 43, ('backbone', 'neck', 'rpn_head', 'roi_head')),
    'configs/upernet_mambaout_t_160k_ade20k.py':
    ((512, 2048), 938, 54, ('backbone', 'decode_head', 'auxiliary_head')),
}
# configs/metafiles/mambaout.yml Metadata FLOPs / Parameters (the paper's Table 1 MACs and
# params at 224, with the classifier head). The paper rounds MACs to 0.1G: femto's count,
# 1.156G, is 3.7% below its 1.2G (1.15-1.25 all print as 1.2), so 2% is out of reach there
# and femto is held to the figure's own precision, +-0.05G. Both counts equal those of timm's
# independent implementation under the same counter (checked below).
PAPER_CLS = {
    'configs/mambaout_f_in1k.py': ('femto', 1.2e9, 0.05e9, 7.3e6),
    'configs/mambaout_t_in1k.py': ('tiny', 4.5e9, 0.02 * 4.5e9, 26.5e6),
}


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script(TOOL)


def test_dense_models_at_paper_sizes(run_script):
    """The T detector and segmentor through the script, both at once (each is one CPU-bound
    process; together they take as long as the segmentor alone)."""
    configs = list(PAPER_DENSE)
    with ThreadPoolExecutor(len(configs)) as pool:
        procs = list(pool.map(
            lambda c: run_script(TOOL, c, '--shape', *PAPER_DENSE[c][0]), configs))
    for config, proc in zip(configs, procs):
        assert proc.returncode == 0, proc.stderr[-3000:]
        (h, w), gmacs, params, parts = PAPER_DENSE[config]
        assert f'input shape: {h}x{w} ' in proc.stdout
        assert re.search(r'^torch \S+, mmengine \S+, mm(det|seg) \S+', proc.stdout, re.M)
        total = re.search(r'^total\s+([\d.]+)\s+([\d.]+)$', proc.stdout, re.M)
        assert total, proc.stdout
        measured_gmacs, measured_params = map(float, total.groups())
        assert measured_gmacs == pytest.approx(gmacs, rel=0.02), proc.stdout
        assert measured_params == pytest.approx(params, rel=0.02), proc.stdout
        for part in parts:
            assert re.search(rf'^{part}\s+[\d.]+\s+[\d.]+', proc.stdout, re.M), part
    # mmdet's inference forward: the bbox head on the RPN's 1000 proposals, the mask head
    # on the first 100 (what the paper-era forward_dummy ran)
    assert 'bbox_roi_extractor 1000, roi_head.mask_roi_extractor 100' in procs[0].stdout


@pytest.mark.parametrize('config', list(PAPER_CLS))
def test_classifiers_at_224(tool, config):
    timm = pytest.importorskip('timm')
    arch, macs, tol, params = PAPER_CLS[config]
    model = tool.build_model(tool.load_config(config))
    result = tool.analyze(model, *tool.make_inputs(model, 'mmpretrain', (224, 224)))
    assert abs(result['macs'] - macs) <= tol, result['macs']
    assert result['params'] == pytest.approx(params, rel=0.02)
    ref = timm.create_model(f'mambaout_{arch}').eval()
    assert result['macs'] == tool.trace_count(ref, (torch.zeros(1, 3, 224, 224), )).total()


def _backbone_macs(tool, model, x):
    fa = tool.trace_count(model, (x, ))
    return fa.total(), fa.by_operator(), fa.unsupported_ops()


def test_fused_mixer_counts_as_composite(tool, monkeypatch):
    """On the CPU the blocks run the composite ops; forcing the fused op (its PyTorch
    elementwise passes) traces one ``prim::PythonOp`` per block instead, with the same MACs."""
    import mmmambaout.models.backbones.mambaout as mambaout
    model = mambaout.MambaOut('femto', out_indices=(0, 1, 2, 3)).eval()
    x = torch.randn(1, 3, 64, 96)
    composite, composite_ops, _ = _backbone_macs(tool, model, x)
    mixer = mambaout.gated_conv_mixer
    monkeypatch.setattr(mambaout, 'gated_conv_mixer',
                        lambda *args, backend, **kw: mixer(*args, backend='fused', **kw))
    fused, fused_ops, unsupported = _backbone_macs(tool, model, x)
    assert fused == composite > 0
    assert fused_ops['PythonOp._GatedConvMixer'] > 0  # the 7x7 convs moved into the handle
    assert fused_ops['conv'] + fused_ops['PythonOp._GatedConvMixer'] == composite_ops['conv']
    assert not [op for op in unsupported if 'PythonOp' in op]


def test_selective_scan_handle(tool):
    """Vim's scan (both directions in one call over 2E channels) counts
    9 * L * 2E * N + 2 * L * 2E (D skip, z gate) per layer."""
    from mmmambaout.models.backbones.vim import Vim
    model = Vim(dict(embed_dims=64, depth=2, d_state=8), img_size=64, out_type='cls_token')
    _, ops, unsupported = _backbone_macs(tool, model.eval(), torch.randn(1, 3, 64, 64))
    length, channels, state = 4 * 4 + 1, 2 * 2 * 64, 8  # tokens + class token; 2E; N
    per_layer = 9 * length * channels * state + 2 * length * channels
    assert ops['PythonOp._SelectiveScanFunction'] == 2 * per_layer
    assert not [op for op in unsupported if 'PythonOp' in op]


def test_errors_are_one_line(tool, capsys):
    with pytest.raises(SystemExit) as e:
        tool.main(['configs/no_such_config.py'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == 'get_flops.py: error: config file not found: configs/no_such_config.py\n'
    with pytest.raises(SystemExit) as e:
        tool.main(['configs/mambaout_t_in1k.py', '--shape', '1', '2', '3'])
    assert e.value.code == 2 and len(capsys.readouterr().err.splitlines()) == 1
