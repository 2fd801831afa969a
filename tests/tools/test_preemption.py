"""tools/train.py on the Mask R-CNN demo config, on the CPU: SIGTERM after the first logged
iteration saves a checkpoint and exits with one line; --resume continues at the next
iteration, mid-epoch, with the losses of an uninterrupted run; --resume with nothing to
resume says so in one line and starts from scratch."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = 'configs/demo/mask_rcnn_mambaout_demo.py'


def _options(data_root):
    return [
        f'train_dataloader.dataset.data_root={data_root}/',
        f'val_dataloader.dataset.data_root={data_root}/',
        f'test_dataloader.dataset.data_root={data_root}/',
        f'val_evaluator.ann_file={data_root}/annotations/instances_val2017.json',
        f'test_evaluator.ann_file={data_root}/annotations/instances_val2017.json',
        # 8 images, batch 2: one epoch of 4 iterations, in this process
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.pipeline.2.scale=(160,160)',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1',
    ]


def _train(work_dir, data_root, *args):
    cmd = [sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir), *args,
           '--cfg-options', *_options(data_root)]
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _losses(work_dir):
    """{iteration: loss} from the json logs (all runs in work_dir)."""
    losses = {}
    for log in Path(work_dir).glob('*/vis_data/*.json'):
        if log.name == 'scalars.json':
            continue
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if 'loss' in rec:
                losses[rec['iter']] = rec['loss']
    return losses


def test_sigterm_then_resume_equals_an_uninterrupted_run(coco_root, tmp_path):
    # the uninterrupted run, with --resume in an empty work dir, beside the one we stop
    reference = _train(tmp_path / 'ref', coco_root, '--resume')
    stopped = _train(tmp_path / 'run', coco_root)
    seen, deadline = '', time.time() + 300
    for line in stopped.stdout:
        seen += line
        if 'Epoch(train) [1][1/4]' in line:
            stopped.send_signal(signal.SIGTERM)
        assert time.time() < deadline, seen[-3000:]
    assert stopped.wait() == 128 + signal.SIGTERM, seen[-3000:]
    assert 'Traceback' not in seen
    said = [line for line in seen.splitlines() if 'SIGTERM' in line]
    assert len(said) == 1, seen[-3000:]
    match = re.search(r'SIGTERM: saved (\S+/iter_(\d+)\.pth) at iteration \d+ \(epoch 1, batch '
                      r'\d+ of 4\); resume with: python tools/train.py (.*)$', said[0])
    assert match, said[0]
    ckpt, saved_at = Path(match.group(1)), int(match.group(2))
    assert ckpt.is_file() and 1 <= saved_at < 4  # mid-epoch (after this or the next iteration)
    assert match.group(3).startswith(f'{CONFIG} --cfg-options ')
    assert match.group(3).endswith(f' --work-dir {tmp_path / "run"} --resume')
    assert (tmp_path / 'run' / 'last_checkpoint').read_text().strip() == str(ckpt)

    resumed = _train(tmp_path / 'run', coco_root, '--resume')
    resumed_log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, resumed_log[-3000:]
    assert f'resuming epoch 1 after batch {saved_at} of 4' in resumed_log
    assert f'Epoch(train) [1][{saved_at}/4]' not in resumed_log
    assert 'Epoch(train) [1][4/4]' in resumed_log

    ref_log = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, ref_log[-3000:]
    said = [line for line in ref_log.splitlines() if '--resume' in line or 'resumed' in line]
    assert said == [f'--resume: no checkpoint to resume in {tmp_path / "ref"} (no '
                    'last_checkpoint there): starting from scratch'], said
    assert 'Did not find last_checkpoint' not in ref_log and 'Epoch(train) [1][1/4]' in ref_log
    ref = _losses(tmp_path / 'ref')
    run = _losses(tmp_path / 'run')
    assert sorted(ref) == [1, 2, 3, 4] and sorted(run) == [1, 2, 3, 4]
    assert ref == run  # before the stop and after the resume
