"""The benchmark scripts run end to end on the CPU (tiny sizes, one iteration) and print
their result lines; the numbers themselves are not checked (timings are not tests)."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_benchmark_backbone_cpu():
    out = run('tools/analysis/benchmark_backbone.py', '--arch', 'femto', '--size', '48', '40',
              '--iters', '1', '--warmup', '1', '--no-fused-mixer')
    assert re.search(r'max \|ours - timm\| on the features: ([\d.e-]+)', out)
    assert re.search(r'speed-up \(timm / ours\): [\d.]+x', out)


def test_benchmark_train_cpu_with_override():
    out = run('tools/analysis/benchmark_train.py', 'configs/demo/upernet_mambaout_demo.py',
              'configs/demo/upernet_mambaout_demo.py#train_speedups=False', '--device', 'cpu',
              '--seg-size', '64', '64', '--iters', '1', '--warmup', '1')
    rows = re.findall(r'^\| (configs/demo/upernet\S*) \| [\d.]+ \| ([\d.]+) \|.*\| True \|$',
                      out, re.M)
    assert [r[0] for r in rows] == ['configs/demo/upernet_mambaout_demo.py',
                                    'configs/demo/upernet_mambaout_demo.py#train_speedups=False']
