"""tools/analysis/profile_train.py on the CPU (host-side profile): every phase of a Mask
R-CNN and of an UperNet training step appears with a positive host time."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('config, phases', [
    ('configs/demo/mask_rcnn_mambaout_demo.py',
     ['backbone + neck forward', 'RPN targets, loss, proposals', 'RoI head targets and loss',
      'backward (all)', 'optimizer step']),
    ('configs/demo/upernet_mambaout_demo.py',
     ['backbone + neck forward', 'decode head loss', 'auxiliary head loss', 'backward (all)',
      'optimizer step']),
])
def test_phases_on_cpu(config, phases):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'tools/analysis/profile_train.py', config, '--device', 'cpu',
         '--det-size', '96', '64', '--seg-size', '64', '64', '--objects', '2', '--iters', '1',
         '--warmup', '1', '--top', '3'],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'per iteration \(mean of 1, profiler on\): wall [\d.]+ ms', proc.stdout)
    for phase in phases:
        m = re.search(rf'^\| {re.escape(phase)} \| ([\d.]+) \|', proc.stdout, re.M)
        assert m and float(m.group(1)) > 0, phase
