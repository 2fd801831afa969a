"""The README's main command, shortened (few images, few iterations): data made,
training, evaluation with the real metrics, checkpoint and pictures written."""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('task,train_options', [
    ('det', ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2']),
    ('seg', ['train_cfg.max_iters=2', 'train_cfg.val_begin=3', 'param_scheduler.0.end=1',
             'param_scheduler.1.begin=1', 'param_scheduler.1.end=2',
             'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2']),
])
def test_run_demo_end_to_end(tmp_path, task, train_options):
    env = dict(os.environ, DEMO_WORK_DIR=str(tmp_path / 'work'), DEMO_DATA=str(tmp_path / 'data'),
               DEMO_DATA_ARGS='--num-train 4 --num-val 4', OMP_NUM_THREADS='2',
               PYTHONUNBUFFERED='1')
    out = subprocess.run(['bash', 'tools/run_demo.sh', task, *train_options], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    name = 'mask_rcnn' if task == 'det' else 'upernet'
    work = tmp_path / 'work' / name
    ckpt = Path((work / 'last_checkpoint').read_text().strip())
    assert ckpt.is_file()
    if task == 'det':
        assert (tmp_path / 'data' / 'coco' / 'annotations' / 'instances_val2017.json').is_file()
        assert 'coco/bbox_mAP:' in log and 'coco/segm_mAP:' in log
    else:
        assert (tmp_path / 'data' / 'ade' / 'ADEChallengeData2016' / 'images').is_dir()
        assert 'mIoU:' in log
    assert 'eta:' in log  # progress with an ETA
    pictures = list((work / 'predictions').rglob('*.png')) + list((work / 'predictions').rglob('*.jpg'))
    assert pictures, 'no prediction pictures drawn'
    assert f'== {name} done: checkpoint {ckpt}' in log
    # the paths printed at the end are real: the log dirs of training and of evaluation
    done = re.search(r'training log in (\S+)/, evaluation log in (\S+)/, pictures in (\S+) ==', log)
    assert done, log[-2000:]
    train_logs, test_logs, pictures_dir = (Path(p) for p in done.groups())
    assert list(train_logs.glob('*.log')) and list(test_logs.glob('*.log'))
    assert train_logs != test_logs and pictures_dir.is_dir()
    # quiet: the environment, config and hooks go to the log files only, once each run
    for noise in ('System environment:', 'Config:', 'Hooks will be executed', 'paramwise_options',
                  'AmpOptimWrapper'):
        assert noise not in log, noise
    assert 'Config:' in next(train_logs.glob('*.log')).read_text()
