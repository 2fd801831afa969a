"""tools/analysis/benchmark_dataloader.py on a tiny generated COCO-style demo set: the
demo config and the full COCO 1x pipeline in the main process (--workers 0), the
workers-per-GPU estimate, the JSON output and the missing-dataset error."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = 'tools/analysis/benchmark_dataloader.py'


def run(args):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)


def rates(stdout):
    return {int(w): (float(total), float(per))
            for w, total, per in re.findall(
                r'^workers (\d+): \d+ images in [\d.]+ s: ([\d.]+) img/s total, '
                r'([\d.]+) img/s per worker', stdout, re.M)}


def test_demo_config_main_process(coco_root):
    out = run(['configs/demo/mask_rcnn_mambaout_demo.py', '--data-root', coco_root,
               '--workers', '0', '--batches', '2', '--warmup', '1'])
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'command: python {SCRIPT} configs/demo/mask_rcnn_mambaout_demo.py' in out.stdout
    assert 'versions: python' in out.stdout and 'mmdet' in out.stdout
    total, per_worker = rates(out.stdout)[0]
    assert total > 0 and per_worker == total  # 0 workers: the main process is one worker
    assert 'Resize((192, 192))' in out.stdout  # the demo config's image_scale


def test_full_coco_pipeline_gpu_estimate_and_json(coco_root, tmp_path):
    out_json = tmp_path / 'r.json'
    out = run(['configs/mask_rcnn_mambaout_t_1x_coco.py', '--data-root', coco_root,
               '--classes-from-ann', '--workers', '0', '--batches', '2', '--warmup', '1',
               '--gpu-img-s', '15.1', '--out', str(out_json)])
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'Resize((1333, 800))' in out.stdout and 'masks BitmapMasks' in out.stdout
    per_worker = rates(out.stdout)[0][1]
    assert per_worker > 0
    res = json.loads(out_json.read_text())
    needed = -(-1.2 * 15.1 // res['results'][0]['img_s_per_worker'])  # ceil
    assert res['workers_per_gpu'] == [dict(gpu_img_s=15.1, workers=int(needed))]
    assert f'GPU at 15.1 img/s: {int(needed)} workers' in out.stdout
    assert res['results'][0]['images'] == 4  # 2 batches of the config's batch size 2


def test_wrong_classes_and_missing_data_are_explained(coco_root, tmp_path, monkeypatch,
                                                     load_script):
    monkeypatch.chdir(ROOT)
    bench = load_script(SCRIPT)
    config = 'configs/mask_rcnn_mambaout_t_1x_coco.py'
    # COCO's 80 classes on the demo annotations: nothing left after filtering
    cfg = bench.load_config(bench.parse_args([config, '--data-root', coco_root]))
    with pytest.raises(SystemExit) as exc:
        bench.build_dataset(cfg)
    msg = str(exc.value)
    assert 'train dataset is empty' in msg and '--classes-from-ann' in msg
    assert 'disc, square' in msg and 'config classes (80): person' in msg
    missing = tmp_path / 'nowhere'
    with pytest.raises(SystemExit) as exc:
        bench.load_config(bench.parse_args([config, '--data-root', str(missing)]))
    msg = str(exc.value)
    assert msg.startswith('error: dataset not found')
    assert f'{missing}/annotations/instances_train2017.json' in msg
    assert '--data-root /path/to/dataset' in msg
