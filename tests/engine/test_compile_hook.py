"""MambaOutCompileHook: which compile mode each backbone gets when training starts (the
hook only sets it; compilation itself is tested in tests/models/backbones)."""
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from mmengine.logging import MMLogger
from torch import nn

from mmmambaout.engine import MambaOutCompileHook, compile_hook
from mmmambaout.models.backbones import MambaOut, Vim

ARCH = dict(depths=(1, 1), dims=(8, 16))


@pytest.fixture(autouse=True)
def no_inductor_cache_setting(monkeypatch, tmp_path):
    # the hook may set $TORCHINDUCTOR_CACHE_DIR: start each test without it, under a
    # cache home of its own, and restore the environment afterwards
    monkeypatch.delenv('TORCHINDUCTOR_CACHE_DIR', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))


def wrapped(wrapper_type, module):
    """``module`` in a model wrapper, without the process group its ``__init__`` needs."""
    wrapper = wrapper_type.__new__(wrapper_type)
    nn.Module.__init__(wrapper)
    wrapper.module = module
    return wrapper


def start_training(backbone, gpu=True, counts=1, monkeypatch=None, wrapper=None, **hook_kwargs):
    monkeypatch.setattr(compile_hook, 'compile_available', lambda: gpu)
    model = nn.Sequential(backbone)
    if wrapper is not None:
        model = wrapped(wrapper, model)
    runner = SimpleNamespace(model=model, logger=MMLogger.get_current_instance(),
                             optim_wrapper=SimpleNamespace(_accumulative_counts=counts))
    MambaOutCompileHook(**hook_kwargs).before_train(runner)
    return backbone


@pytest.mark.parametrize('cuda_graphs,counts,mode', [
    (True, 1, 'reduce-overhead'),   # detectors: CUDA graphs (one GPU or DDP)
    (False, 1, True),               # segmentors: compiled, no graphs
    (True, 2, True),                # gradient accumulation: no graphs
])
def test_mode_follows_the_training_setup(monkeypatch, cuda_graphs, counts, mode):
    backbone = start_training(MambaOut(ARCH, out_indices=(0, 1)), counts=counts,
                              monkeypatch=monkeypatch, cuda_graphs=cuda_graphs)
    assert backbone.compile_stages == mode and backbone.compile_memory_budget == 0.5
    assert [s.compile_name for s in backbone.stages] == ['mambaout_stage0', 'mambaout_stage1']
    assert {s.compile_mode for s in backbone.stages} == {
        mode if isinstance(mode, str) else 'default'}


def _wrappers():
    from mmengine.model import MMDistributedDataParallel, MMSeparateDistributedDataParallel
    from torch.nn.parallel import DistributedDataParallel
    return [(DistributedDataParallel, 'reduce-overhead'),
            (MMDistributedDataParallel, 'reduce-overhead'),    # tools/dist_train.sh
            (MMSeparateDistributedDataParallel, True)]         # a DDP subclass, not checked


@pytest.mark.parametrize('wrapper,mode', _wrappers())
def test_graphs_under_ddp_only(monkeypatch, wrapper, mode):
    backbone = start_training(MambaOut(ARCH, out_indices=(0, 1)), wrapper=wrapper,
                              monkeypatch=monkeypatch)
    assert backbone.compile_stages == mode


def test_no_graphs_under_fsdp():
    from mmengine.model.wrappers import MMFullyShardedDataParallel as FSDP
    assert not compile_hook.graphs_checked_for(FSDP.__new__(FSDP))
    assert compile_hook.graphs_checked_for(nn.Linear(1, 1))


def test_nothing_without_a_gpu(monkeypatch):
    backbone = start_training(MambaOut(ARCH, out_indices=(0, 1)), gpu=False, monkeypatch=monkeypatch)
    assert backbone.compile_stages is None
    assert all(s.compile_name is None for s in backbone.stages)


@pytest.mark.parametrize('kwargs,stages,budget', [
    (dict(compile_stages=False), False, None),
    (dict(compile_stages=True), True, None),
    (dict(with_cp=True), None, None),
    (dict(compile_memory_budget=0.8), 'reduce-overhead', 0.8),
])
def test_the_configs_own_choice_wins(monkeypatch, kwargs, stages, budget):
    backbone = start_training(MambaOut(ARCH, out_indices=(0, 1), **kwargs), monkeypatch=monkeypatch)
    assert backbone.compile_stages == stages and backbone.compile_memory_budget == budget


def test_other_backbones_untouched(monkeypatch):
    vim = Vim(dict(embed_dims=32, depth=6), out_indices=(0, 1, 2, 3))
    before = {n: type(m) for n, m in vim.named_modules()}
    start_training(vim, monkeypatch=monkeypatch)
    assert {n: type(m) for n, m in vim.named_modules()} == before


@pytest.mark.parametrize('stats,words', [
    ((0, 0), '0 CUDA graphs recorded in 20 iterations (each stage and direction, per input '
             'size), 0 runs without a graph'),
    ((46, 3), '46 CUDA graphs recorded in 20 iterations (each stage and direction, per input '
              'size), 3 runs without a graph: inductor declined to record some graphs '
              '(TORCH_LOGS=perf_hints says why)'),
])
def test_graphs_reported_in_the_log(monkeypatch, stats, words):
    """With graphs, the log says after iteration 20 (and each epoch) how many were recorded
    and how many runs went without; nothing without graphs."""
    monkeypatch.setattr(compile_hook, 'compile_available', lambda: True)
    monkeypatch.setattr(compile_hook, 'cuda_graph_stats', lambda: stats)
    lines = []
    logger = SimpleNamespace(info=lines.append)
    for cuda_graphs in (True, False):
        hook = MambaOutCompileHook(cuda_graphs=cuda_graphs)
        runner = SimpleNamespace(model=nn.Sequential(MambaOut(ARCH, out_indices=(0, 1))),
                                 logger=logger, iter=19,
                                 optim_wrapper=SimpleNamespace(_accumulative_counts=1))
        hook.before_train(runner)
        hook.after_train_iter(runner, 0)
        runner.iter = 20
        hook.after_train_iter(runner, 0)   # once, at 20
    reports = [line for line in lines if 'recorded' in line]
    assert reports == ['MambaOutCompileHook: ' + words]


def test_graph_stats_without_cuda():
    """Nothing recorded in a process that never used CUDA graphs (the tree manager's
    internals as the hook reads them: torch 2.11-2.14)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip('this process already used CUDA')
    assert compile_hook.cuda_graph_stats() == (0, 0)


@pytest.mark.parametrize('setting, cache_dir, expected', [
    (None, 'auto', '{xdg}/mmmambaout/inductor'),   # ours, in the home folder
    (None, '~/ind', '{home}/ind'),
    (None, 'rel/ind', '{cwd}/rel/ind'),            # made absolute
    (None, None, None),                            # inductor's default in /tmp
    (None, '', None),
    ('/my/cache', 'auto', '/my/cache'),            # the user's variable always wins
    # inductor wrote its default there (it does on import): as if unset
    ('{default}', 'auto', '{xdg}/mmmambaout/inductor'),
])
def test_inductor_cache_folder(monkeypatch, tmp_path, setting, cache_dir, expected):
    if setting:
        monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', setting.format(
            default=compile_hook._inductor_default_cache_dir()))
    start_training(MambaOut(ARCH, out_indices=(0, 1)), monkeypatch=monkeypatch,
                   cache_dir=cache_dir)
    if expected:
        expected = expected.format(xdg=tmp_path / 'cache', home=os.path.expanduser('~'),
                                   cwd=os.getcwd())
    assert os.environ.get('TORCHINDUCTOR_CACHE_DIR') == expected
    if expected:
        assert compile_hook.inductor_cache_dir() == expected   # what the hook logs


def test_no_cache_setting_without_a_gpu(monkeypatch):
    start_training(MambaOut(ARCH, out_indices=(0, 1)), gpu=False, monkeypatch=monkeypatch)
    assert 'TORCHINDUCTOR_CACHE_DIR' not in os.environ


def test_inductor_writes_where_the_hook_points_it(tmp_path):
    """In a fresh process that has imported mmmambaout (and with it inductor, which
    looked its folder up already): the folder the hook sets is where a compiled
    function's cache files go (inductor on the CPU, its C++ backend)."""
    code = textwrap.dedent(f"""
        import os, torch
        import mmmambaout   # which sets inductor's default folder in the variable
        from mmmambaout.engine.compile_hook import use_cache_dir
        use_cache_dir({str(tmp_path / 'ind')!r})
        torch.compile(lambda x: (x.sin() * 2 + 1).relu())(torch.randn(8))
        print(sorted(os.listdir({str(tmp_path / 'ind')!r})))
    """)
    env = {k: v for k, v in os.environ.items() if k != 'TORCHINDUCTOR_CACHE_DIR'}
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, timeout=600)
    if proc.returncode != 0 and 'InvalidCxxCompiler' in proc.stderr:
        pytest.skip('no C++ compiler for inductor here')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'fxgraph' in proc.stdout, proc.stdout
