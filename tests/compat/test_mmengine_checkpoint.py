"""mmengine 0.10.7 on torch >= 2.6: resume with weights_only kept on (only on the version
the change was written for); pkg_resources-free configs."""
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

import mmmambaout  # noqa: F401  (applies mmmambaout.compat)
from mmmambaout.compat import UnsupportedVersionWarning, mmengine_checkpoint


def test_runner_resume_restores_iteration_and_optimizer(tmp_path, make_tiny_runner):
    first = make_tiny_runner(tmp_path, max_iters=3)
    first.train()
    ckpt = tmp_path / 'iter_3.pth'
    assert ckpt.is_file()
    # torch's default is weights_only=True; our own checkpoint must still be strict there
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt)
    saved_state = first.optim_wrapper.optimizer.state_dict()['state']

    second = make_tiny_runner(tmp_path, max_iters=6, resume=True)
    second._train_loop = second.build_train_loop(second._train_loop)
    second.call_hook('before_run')
    second.load_or_resume()
    assert second.iter == 3
    resumed_state = second.optim_wrapper.optimizer.state_dict()['state']
    assert resumed_state.keys() == saved_state.keys()
    for k in saved_state:
        assert int(resumed_state[k]['step']) == int(saved_state[k]['step']) == 3
        torch.testing.assert_close(resumed_state[k]['exp_avg'], saved_state[k]['exp_avg'], rtol=0, atol=0)
    torch.testing.assert_close(second.model.fc.weight, first.model.fc.weight, rtol=0, atol=0)

    second.train()
    assert second.iter == 6
    assert (tmp_path / 'iter_6.pth').is_file()


class _RunsCode:
    marker = None

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_mmengine_loader_still_refuses_code(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    marker = tmp_path / 'pwned'
    _RunsCode.marker = marker
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_history_buffer_getattr_is_restricted():
    from mmengine.logging import HistoryBuffer

    from mmmambaout.compat.mmengine_checkpoint import _history_buffer_getattr
    assert _history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(RuntimeError, match='refused getattr'):
        _history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(RuntimeError, match='refused getattr'):
        _history_buffer_getattr(os, 'system')


def test_cross_package_base_configs_load_in_fresh_interpreter(tmp_path):
    """mmengine resolves `mmdet::` through pkg_resources; setup.py pins setuptools<81."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py',\n"
                   "          'mmseg::_base_/datasets/ade20k.py']\n")
    code = ('from mmengine.config import Config; from mmengine.utils import is_installed; '
            f'c = Config.fromfile({str(cfg)!r}); '
            "assert c.model.type == 'MaskRCNN' and c.dataset_type == 'ADE20KDataset'; "
            "assert is_installed('mmdet') and not is_installed('no_such_pkg_xyz'); print('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]


@pytest.fixture
def unpatched_mmengine(monkeypatch):
    """mmengine's checkpoint loader as mmengine defines it (restored after the test)."""
    from mmengine.runner import checkpoint, runner
    original = checkpoint._load_checkpoint.__wrapped__
    monkeypatch.setattr(checkpoint, '_load_checkpoint', original)
    monkeypatch.setattr(runner, '_load_checkpoint', original)
    return checkpoint, runner, original


def test_applied_on_mmengine_0_10_7(unpatched_mmengine, fake_versions):
    checkpoint, runner, original = unpatched_mmengine
    fake_versions(mmengine='0.10.7')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert mmengine_checkpoint.apply() is True
        assert mmengine_checkpoint.apply() is True  # idempotent: wrapped once
    assert not [w for w in caught if issubclass(w.category, UnsupportedVersionWarning)]
    for module in (checkpoint, runner):
        assert module._load_checkpoint.__wrapped__ is original


@pytest.mark.parametrize('other', ['0.10.6', '0.11.0', None])
def test_other_mmengine_left_alone_with_one_warning(unpatched_mmengine, fake_versions, other):
    checkpoint, runner, original = unpatched_mmengine
    fake_versions(mmengine=other)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            assert mmengine_checkpoint.apply() is False
    assert [w.category for w in caught] == [UnsupportedVersionWarning]
    message = str(caught[0].message)
    assert 'written for mmengine 0.10.7' in message and 'left unchanged' in message
    assert f'mmengine {other or "(not installed)"} is installed' in message
    assert checkpoint._load_checkpoint is original and runner._load_checkpoint is original
