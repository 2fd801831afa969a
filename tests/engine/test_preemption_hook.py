"""PreemptionCheckpointHook in-process, on a tiny model whose training draws from every
random generator (torch in the step, NumPy and Python in the data), with validation that
draws too: SIGTERM mid-epoch / mid-run saves and exits 143, and --resume gives exactly the
losses of an uninterrupted run, for epoch- and iteration-based loops, with no seed set.
Also: the best checkpoint is written atomically, and the TensorBoard recipe of the
runtime bases writes an event file."""
import os
import random
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[2]


class _NoisyPoints(Dataset):

    def __len__(self):
        return 10  # batch 2: 5 iterations an epoch

    def __getitem__(self, i):  # an "augmentation" from NumPy's and Python's generators
        return dict(x=torch.full((4, ), float(i) + np.random.rand() + random.random()))


def _model():
    from mmengine.model import BaseModel

    class Noisy(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, x, mode='loss'):
            x = torch.stack(x) if isinstance(x, list) else x
            out = self.fc(x * (1 + 0.1 * torch.rand_like(x)))  # torch's generator in the step
            if mode == 'loss':
                return {'loss': out.pow(2).mean() / 100}
            return [dict(score=float(v)) for v in out.flatten()]

    torch.manual_seed(0)  # the same initial weights in every run
    return Noisy()


def _metric(scores=None):
    from mmengine.evaluator import BaseMetric

    class Score(BaseMetric):
        """The mean prediction, or the next of ``scores`` at each validation."""

        def __init__(self):
            super().__init__(prefix='toy')
            self.scores = list(scores) if scores else None

        def process(self, data_batch, data_samples):
            self.results.extend(s['score'] for s in data_samples)

        def compute_metrics(self, results):
            return dict(score=self.scores.pop(0) if self.scores else float(np.mean(results)))

    return Score()


def _runner(work_dir, by_epoch, resume=False, seed=None, kill_after=None, val=True, losses=None,
            scores=None, visualizer=None):
    import mmmambaout  # noqa: F401  (registers the hooks)
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Record(Hook):
        priority = 'NORMAL'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses[runner.iter + 1] = outputs['loss'].item()
            if kill_after is not None and runner.iter + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGTERM)  # lands during this iteration's hooks

    loader = dict(dataset=_NoisyPoints(), sampler=dict(type='DefaultSampler', shuffle=True),
                  batch_size=2, num_workers=0, collate_fn=dict(type='default_collate'))
    train_cfg = (dict(by_epoch=True, max_epochs=3, val_interval=1) if by_epoch else
                 dict(by_epoch=False, max_iters=12, val_interval=4))
    checkpoint = dict(type='AtomicCheckpointHook', by_epoch=by_epoch, interval=1 if by_epoch else 4,
                      save_best='toy/score', rule='greater')
    return Runner(
        model=_model(), work_dir=str(work_dir), train_dataloader=loader,
        val_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)) if val else None,
        val_cfg=dict() if val else None, val_evaluator=[_metric(scores)] if val else None,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=train_cfg,
        default_hooks=dict(checkpoint=checkpoint, logger=dict(type='LoggerHook', interval=1),
                           preemption=dict(type='PreemptionCheckpointHook')),
        custom_hooks=[Record()], resume=resume, randomness=dict(seed=seed),
        visualizer=visualizer, experiment_name=f'{Path(work_dir).name}_{resume}')


@pytest.mark.parametrize('by_epoch,kill_after', [(True, 7), (False, 6)])
def test_sigterm_saves_and_resume_is_exact(tmp_path, by_epoch, kill_after):
    stopped, resumed, reference = {}, {}, {}
    handler = signal.getsignal(signal.SIGTERM)
    runner = _runner(tmp_path / 'run', by_epoch, kill_after=kill_after, losses=stopped)
    with pytest.raises(SystemExit) as exit_info:
        runner.train()
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
    ckpt = tmp_path / 'run' / f'iter_{kill_after}.pth'
    assert ckpt.is_file() and not list((tmp_path / 'run').glob('.*partial'))
    assert (tmp_path / 'run' / 'last_checkpoint').read_text().strip() == str(ckpt)
    assert max(stopped) == kill_after
    meta = torch.load(ckpt, weights_only=False)['meta']
    assert meta['iter'] == kill_after
    if by_epoch:  # epoch 2 in progress (0-based 1), 2 of its 5 batches done
        assert (meta['epoch'], meta['epoch_iter'], meta['epoch_len']) == (1, 2, 5)
    seed = runner.seed

    # no seed in the config: the resumed process draws another, the checkpoint's is used
    again = _runner(tmp_path / 'run', by_epoch, resume=True, losses=resumed)
    again.train()
    assert min(resumed) == kill_after + 1 and again.iter == (15 if by_epoch else 12)

    _runner(tmp_path / 'ref', by_epoch, seed=seed, losses=reference).train()
    assert {i: v for i, v in reference.items() if i > kill_after} == resumed
    assert {i: v for i, v in reference.items() if i <= kill_after} == stopped
    # the checkpoint written on SIGTERM goes once a later regular one is complete
    assert not ckpt.exists()


def test_best_checkpoint_replaced_only_when_the_new_one_is_complete(tmp_path, monkeypatch):
    work = tmp_path / 'best'
    runner = _runner(work, by_epoch=True, seed=0, losses={}, scores=[0.2, 0.5, 0.4])
    runner.train()
    best = sorted(p.name for p in work.glob('best_*.pth'))
    assert best == ['best_toy_score_epoch_2.pth']
    assert not list(work.glob('.*partial'))
    assert runner.message_hub.get_info('best_score') == 0.5

    # a kill while the next best is being written leaves the previous best in place
    from mmengine.fileio.backends.local_backend import LocalBackend
    real_put = LocalBackend.put

    def put(self, obj, filepath):
        if 'best_toy_score' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise KeyboardInterrupt('killed while writing the best checkpoint')
        return real_put(self, obj, filepath)

    work2 = tmp_path / 'best2'
    runner = _runner(work2, by_epoch=True, seed=0, losses={}, scores=[0.2, 0.5])
    calls = {'n': 0}

    def put_second_best_dies(self, obj, filepath):
        if 'best_toy_score' in str(filepath):
            calls['n'] += 1
            if calls['n'] == 2:
                return put(self, obj, filepath)
        return real_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put_second_best_dies)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    monkeypatch.undo()
    assert sorted(p.name for p in work2.glob('best_*.pth')) == ['best_toy_score_epoch_1.pth']
    torch.load(work2 / 'best_toy_score_epoch_1.pth', weights_only=False)  # complete


def test_tensorboard_lines_of_the_runtime_bases_write_events(tmp_path):
    pytest.importorskip('tensorboard')
    from mmengine.config import Config
    import mmmambaout  # noqa: F401
    recipes = []
    for base in ('det_runtime.py', 'seg_runtime.py'):
        text = (ROOT / 'configs' / '_base_' / base).read_text()
        lines = re.findall(r'^# ((?:vis_backends|visualizer) = .*)$', text, re.M)
        assert len(lines) == 2, base
        recipes.append('\n'.join(lines))
    assert recipes[0] == recipes[1]
    # the lines uncommented in a config that inherits mmdet's runtime, as the comment says
    child = tmp_path / 'with_tensorboard.py'
    child.write_text(f"_base_ = 'mmdet::_base_/default_runtime.py'\n{recipes[0]}\n")
    cfg = Config.fromfile(str(child))
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend',
                                                               'TensorboardVisBackend']
    vis = dict(cfg.visualizer, type='Visualizer')  # the same backends, without mmdet's scope
    runner = _runner(tmp_path / 'tb', by_epoch=False, seed=0, val=False, losses={}, visualizer=vis)
    runner.train()
    events = list((tmp_path / 'tb').glob('*/vis_data/events.out.tfevents.*'))
    assert len(events) == 1 and events[0].stat().st_size > 100
    assert list((tmp_path / 'tb').glob('*/vis_data/scalars.json'))  # the json logs still there
