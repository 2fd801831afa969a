"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on CPU, on a small
generated ADE20K-layout dataset: dataset errors, 2-process training, kill and resume."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = 'configs/demo/upernet_mambaout_demo.py'


def small_run_options(data_root, max_iters, ckpt_interval):
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        f'train_cfg.max_iters={max_iters}', f'train_cfg.val_begin={max_iters + 1}',
        f'param_scheduler.1.end={max_iters}', 'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
        f'default_hooks.checkpoint.interval={ckpt_interval}',
        'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1',
        'randomness.seed=0',
    ]


def run(cmd, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, **kw)


def test_missing_dataset_names_path_and_fix(tmp_path):
    out = run([sys.executable, 'tools/train.py', 'configs/mask_rcnn_mambaout_t_1x_coco.py',
               '--work-dir', str(tmp_path / 'w'), '--cfg-options',
               f'train_dataloader.dataset.data_root={tmp_path}/nowhere/'], timeout=300)
    assert out.returncode == 2
    assert 'error: dataset not found or incomplete. Expected:' in out.stderr
    assert f'{tmp_path}/nowhere/annotations/instances_train2017.json' in out.stderr
    assert 'data/coco/annotations/instances_val2017.json' in out.stderr
    assert '--cfg-options train_dataloader.dataset.data_root=/path/to/dataset val_dataloader' in out.stderr
    assert 'Traceback' not in out.stderr and 'MaskRCNN' not in out.stdout  # before any model


def test_dist_train_two_processes_then_test(ade_root, tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    work = tmp_path / 'dist'
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PORT=str(port))
    out = subprocess.run(
        ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work), '--cfg-options',
         *small_run_options(ade_root, 2, 2)], cwd=ROOT, capture_output=True, text=True, env=env,
        timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'Iter(train) [2/2]' in log
    # the environment block goes to the log file, not the terminal (LogFileConfigRunner)
    log_file = next(work.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log_file
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    test = run([sys.executable, 'tools/test.py', CONFIG, str(ckpt), '--work-dir', str(work),
                '--cfg-options', *small_run_options(ade_root, 2, 2)], timeout=300)
    assert test.returncode == 0, (test.stdout + test.stderr)[-3000:]
    assert 'mIoU' in test.stdout + test.stderr


def test_sigkill_mid_run_then_resume_reaches_the_same_final_iteration(ade_root, tmp_path):
    work = tmp_path / 'kill'
    cmd = [sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work), '--cfg-options',
           *small_run_options(ade_root, 8, 3)]
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = ''
    deadline = time.time() + 600
    for line in proc.stdout:  # kill it mid-run, after the first checkpoint
        seen += line
        if 'Iter(train) [4/8]' in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.time() < deadline, seen[-2000:]
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, seen[-2000:]
    assert (work / 'iter_3.pth').is_file() and not (work / 'iter_6.pth').exists()

    resumed = run(cmd + ['--resume'], timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert 'resumed epoch: 0, iter: 3' in log
    assert 'Iter(train) [4/8]' in log and 'Iter(train) [8/8]' in log
    assert 'Iter(train) [3/8]' not in log
    assert (work / 'iter_8.pth').is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_8.pth')
