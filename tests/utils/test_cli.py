"""Checks of mmmambaout.utils.cli that tools/train.py and tools/test.py run before the
Runner is built (the tools end to end: tests/tools)."""
import pytest
import torch
from mmengine.config import Config

from mmmambaout.utils.cli import UserError, check_gpu_per_process


@pytest.mark.parametrize('launcher,var', [('pytorch', 'LOCAL_RANK'), ('slurm', 'SLURM_LOCALID'),
                                          ('mpi', 'OMPI_COMM_WORLD_LOCAL_RANK')])
def test_a_process_without_a_gpu_is_told_how_many_to_start(monkeypatch, launcher, var):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1')
    cfg = Config(dict(launcher=launcher))
    monkeypatch.setenv(var, '1')
    check_gpu_per_process(cfg)   # ranks 0 and 1 have theirs
    monkeypatch.setenv(var, '2')
    with pytest.raises(UserError) as err:
        check_gpu_per_process(cfg)
    assert str(err.value) == (
        'process 2 of this node has no GPU: 2 visible (CUDA_VISIBLE_DEVICES=0,1). Start one '
        'process per GPU, e.g. tools/dist_train.sh CONFIG 2 (slurm: GPUS_PER_NODE=2).')


def test_nothing_to_check_without_a_launcher_or_gpu(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '5')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    check_gpu_per_process(Config(dict(launcher='pytorch')))   # the CPU (gloo) path
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    check_gpu_per_process(Config(dict(launcher='none')))
