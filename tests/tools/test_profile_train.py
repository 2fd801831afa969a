"""tools/analysis/profile_train.py on the CPU (host-side profile): every phase of a Mask
R-CNN and of an UperNet training step appears with a positive host time."""
import re

import pytest


@pytest.mark.parametrize('config, phases', [
    ('configs/demo/mask_rcnn_mambaout_demo.py',
     ['backbone + neck forward', 'RPN targets, loss, proposals', 'RoI head targets and loss',
      'backward (all)', 'optimizer step']),
    ('configs/demo/upernet_mambaout_demo.py',
     ['backbone + neck forward', 'decode head loss', 'auxiliary head loss', 'backward (all)',
      'optimizer step']),
])
def test_phases_on_cpu(run_script, config, phases):
    proc = run_script('tools/analysis/profile_train.py', config, '--device', 'cpu',
                      '--det-size', 96, 64, '--seg-size', 64, 64, '--objects', 2, '--iters', 1,
                      '--warmup', 1, '--top', 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'per iteration \(mean of 1, profiler on\): wall [\d.]+ ms', proc.stdout)
    for phase in phases:
        m = re.search(rf'^\| {re.escape(phase)} \| ([\d.]+) \|', proc.stdout, re.M)
        assert m and float(m.group(1)) > 0, phase


def test_count_ops_table(run_script):
    proc = run_script('tools/analysis/profile_train.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                      '--device', 'cpu', '--det-size', 96, 64, '--objects', 2, '--iters', 1,
                      '--warmup', 1, '--top', 1, '--count-ops')
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = dict(re.findall(r'^\| ([^|]+?) \| (\d+) \| \d+ \|$', proc.stdout, re.M))
    for phase in ('backbone + neck forward', 'RPN targets, loss, proposals',
                  'RoI head targets and loss', 'backward (all)', 'optimizer step'):
        assert int(rows[phase]) > 0, phase
    assert int(rows['total']) == sum(int(v) for k, v in rows.items() if k != 'total')
