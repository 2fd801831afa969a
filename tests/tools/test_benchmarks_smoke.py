"""The benchmark scripts run end to end on the CPU (tiny sizes, one iteration) and print
their result lines; the numbers themselves are not checked (timings are not tests)."""
import re


def test_benchmark_backbone_cpu(run_script):
    proc = run_script('tools/analysis/benchmark_backbone.py', '--arch', 'femto', '--size', 48,
                      40, '--iters', 1, '--warmup', 1, '--no-fused-mixer')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'max \|ours - timm\| on the features: ([\d.e-]+)', proc.stdout)
    assert re.search(r'speed-up \(timm / ours\): [\d.]+x', proc.stdout)


def test_benchmark_train_cpu_side_by_side(run_script):
    proc = run_script('tools/analysis/benchmark_train.py', 'configs/demo/upernet_mambaout_demo.py',
                      'configs/stock/upernet_mambaout_demo.py',
                      '--device', 'cpu', '--seg-size', 64, 64, '--iters', 1, '--warmup', 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r'^\| (configs/(?:demo|stock)/upernet\S*) \| [\d.]+ \| ([\d.]+) \|.*\| True \|$',
                      proc.stdout, re.M)
    assert [r[0] for r in rows] == ['configs/demo/upernet_mambaout_demo.py',
                                    'configs/stock/upernet_mambaout_demo.py']


def test_benchmark_train_cycles_detection_sizes(run_script):
    proc = run_script('tools/analysis/benchmark_train.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                      '--device', 'cpu', '--det-size', 96, 64, 64, 96, '--objects', 2,
                      '--iters', 2, '--warmup', 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'detection sizes [(96, 64), (64, 96)]' in proc.stdout
    assert re.search(r'^\| configs/demo/mask_rcnn_mambaout_demo.py \|.*\| True \|$', proc.stdout,
                     re.M)
    bad = run_script('tools/analysis/benchmark_train.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                     '--device', 'cpu', '--det-size', 96, 64, 64)
    assert bad.returncode != 0 and '--det-size takes W H pairs' in bad.stderr


def test_benchmark_train_rounds(run_script):
    proc = run_script('tools/analysis/benchmark_train.py', 'configs/demo/upernet_mambaout_demo.py',
                      'configs/stock/upernet_mambaout_demo.py',
                      '--device', 'cpu', '--seg-size', 64, 64, '--iters', 1, '--warmup', 1,
                      '--rounds', 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '1 timed iterations (median) x 3 rounds' in proc.stdout
    rows = re.findall(r'^\| (configs/(?:demo|stock)/upernet\S*) \|.*\| True \| ([\d.]+) / ([\d.]+) / '
                      r'([\d.]+) \|$', proc.stdout, re.M)
    assert [r[0] for r in rows] == ['configs/demo/upernet_mambaout_demo.py',
                                    'configs/stock/upernet_mambaout_demo.py']
    bad = run_script('tools/analysis/benchmark_train.py', 'configs/demo/upernet_mambaout_demo.py',
                     '--device', 'cpu', '--rounds', 0)
    assert bad.returncode != 0 and '--rounds must be at least 1' in bad.stderr
