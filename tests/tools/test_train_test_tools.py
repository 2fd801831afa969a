"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on CPU, on a small
generated ADE20K-layout dataset: dataset errors, 2-process and two-node training, distributed
testing against one process, kill and resume."""
import os
import re
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


def test_dist_train_two_nodes_on_one_host_then_dist_test(ade_root, tmp_path):
    """dist_train.sh's multi-node path: NNODES=2, one process per "node", on gloo; then
    dist_test.sh on two processes gives the single-process metrics."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    work = tmp_path / 'nodes'
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PORT=str(port),
               NNODES='2', MASTER_ADDR='127.0.0.1')
    cmd = ['bash', 'tools/dist_train.sh', CONFIG, '1', '--work-dir', str(work), '--cfg-options',
           *small_run_options(ade_root, 2, 2)]
    node1 = subprocess.Popen(cmd, cwd=ROOT, env=dict(env, NODE_RANK='1'), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    node0 = subprocess.run(cmd, cwd=ROOT, env=dict(env, NODE_RANK='0'), capture_output=True,
                           text=True, timeout=600)
    log1 = node1.communicate(timeout=120)[0]
    assert node0.returncode == 0 and node1.returncode == 0, (node0.stderr + log1)[-3000:]
    log_file = next(work.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log_file and 'GPU number: 2' in log_file
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    options = ['--work-dir', str(work), '--cfg-options', *small_run_options(ade_root, 2, 2)]
    single = run([sys.executable, 'tools/test.py', CONFIG, str(ckpt), *options], timeout=300)
    two = subprocess.run(['bash', 'tools/dist_test.sh', CONFIG, str(ckpt), '2', *options],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
                                  PORT=str(port)))
    metrics = []
    for out in (single, two):
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
        line = re.search(r'Iter\(test\) \[\d+/\d+\]\s+aAcc: (\S+)\s+mIoU: (\S+)\s+mAcc: (\S+)',
                         out.stdout + out.stderr)
        assert line, (out.stdout + out.stderr)[-2000:]
        metrics.append(line.groups())
    assert metrics[0] == metrics[1]


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
