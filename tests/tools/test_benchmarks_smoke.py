"""The benchmark scripts run end to end on the CPU (tiny sizes, one iteration) and print
their result lines; the numbers themselves are not checked (timings are not tests)."""
import re

import pytest


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


def test_benchmark_train_prints_each_iteration(run_script):
    proc = run_script('tools/analysis/benchmark_train.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                      '--device', 'cpu', '--det-size', 96, 64, 64, 96, '--objects', 2,
                      '--iters', 1, '--warmup', 2, '--print-iters')
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = re.findall(r'iteration (\d) \((warm-up|timed), size \((\d+), (\d+)\)\): [\d.]+ s',
                       proc.stdout)
    assert lines == [('1', 'warm-up', '96', '64'), ('2', 'warm-up', '64', '96'),
                     ('3', 'timed', '96', '64')]


def test_benchmark_inference_cpu_side_by_side(run_script):
    proc = run_script('tools/analysis/benchmark_inference.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                      'configs/demo/upernet_mambaout_demo.py', '--device', 'cpu', '--images', 2,
                      '--rounds', 1, '--slide', '--as-in-training')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'^2 images, sizes .* first pass \+ 1 timed passes', proc.stdout, re.M)
    det = re.search(r'^\| configs/demo/mask_rcnn_mambaout_demo.py \| [\d.]+ \| [\d.]+ \| '
                    r'[\d.]+ \([\d.]+\) \| nan \| nan \| ([\d.]+) \|$', proc.stdout, re.M)
    assert det and float(det.group(1)) == 100.0   # score_thr 0: max_per_img detections
    assert re.search(r'^\| configs/demo/upernet_mambaout_demo.py \| [\d.]+ \|.* \| - \|$',
                     proc.stdout, re.M)


def test_benchmark_inference_separate_processes(run_script):
    proc = run_script('tools/analysis/benchmark_inference.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                      'configs/demo/upernet_mambaout_demo.py', '--device', 'cpu', '--images', 1,
                      '--rounds', 1, '--separate-processes')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'each config in its own process' in proc.stdout
    # each child printed its own header, then the parent one table of both
    assert proc.stdout.count('command: python') == 3
    for name in ('mask_rcnn_mambaout_demo', 'upernet_mambaout_demo'):
        assert f'--- configs/demo/{name}.py, in its own process' in proc.stdout
        assert len(re.findall(rf'^\| configs/demo/{name}.py \| [\d.]+ \|', proc.stdout, re.M)) == 2
    bad = run_script('tools/analysis/benchmark_inference.py', 'configs/no_such_config.py',
                     '--device', 'cpu', '--images', 1, '--rounds', 1, '--separate-processes')
    assert bad.returncode != 0 and 'error: the process for configs/no_such_config.py' in bad.stderr


def test_profile_inference_cpu_phases(run_script):
    proc = run_script('tools/analysis/profile_inference.py', 'configs/demo/mask_rcnn_mambaout_demo.py',
                      '--device', 'cpu', '--images', 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'mask_rcnn_mambaout_demo.py: [\d.]+ ms per image \(plain step, mean\), '
                     r'score_thr 0.0, 100 detections', proc.stdout)
    phases = re.findall(r'^\| ([\w +]+) \| [\d.]+ \| (\d+) \| - \|$', proc.stdout, re.M)
    assert [p for p, _ in phases] == ['preprocess', 'backbone + neck', 'RPN predict',
                                      'RoI box predict', 'RoI mask predict']
    assert all(int(n) > 0 for _, n in phases)
    proc = run_script('tools/analysis/profile_inference.py', 'configs/demo/upernet_mambaout_demo.py',
                      '--device', 'cpu', '--images', 1)
    assert proc.returncode == 1 and 'not a two-stage mmdet detector' in proc.stderr


def test_image_sizes_spread(load_script):
    module = load_script('tools/analysis/benchmark_inference.py')
    sizes = module.image_sizes(200)
    assert sizes == module.image_sizes(200) and len(set(sizes)) > 150
    assert all(480 <= max(s) <= 640 and max(s) / min(s) <= 2.01 for s in sizes)
    assert 40 < sum(h > w for h, w in sizes) < 160   # portrait and landscape


def test_benchmark_dwconv_cpu(run_script):
    proc = run_script('tools/analysis/benchmark_dwconv.py', '--device', 'cpu', '--size', 80, 96,
                      '--dtypes', 'fp32', '--steady-iters', 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r'^\| fp32 \| (\w+) \|( [\d.]+ / [\d.]+ \|){4}$', proc.stdout, re.M)
    assert [r[0] for r in rows] == ['cl', 'nchw', 'cl_nocudnn']


@pytest.mark.parametrize('gpus', [1, 2])
def test_time_to_speed_cpu(run_script, ade_root, tmp_path, gpus):
    """tools/train.py (or tools/dist_train.sh, two processes on gloo) on the segmentation
    demo config for 4 iterations: every iteration's time since launch, and the train.py
    arguments passed through."""
    root = f'{ade_root}/'
    proc = run_script(
        'tools/analysis/time_to_speed.py', 'configs/demo/upernet_mambaout_demo.py',
        '--work-dir', tmp_path / 'w', '--tail', 2, '--out', tmp_path / 'r.json',
        '--gpus', gpus, '--',
        '--cfg-options', *[f'{k}_dataloader.dataset.data_root={root}'
                           for k in ('train', 'val', 'test')],
        'train_cfg.max_iters=4', 'train_cfg.val_interval=100', 'train_dataloader.batch_size=2',
        *[f'{k}_dataloader.num_workers=0' for k in ('train', 'val', 'test')],
        *[f'{k}_dataloader.persistent_workers=False' for k in ('train', 'val', 'test')])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = re.search(rf'^\| {gpus} \| 4 \| (\d+) \| - \| - \| (\d+) \| ([\d.]+) \| ([\d.]+) \| - \| '
                    r'- \| - \| \d+ \|$', proc.stdout, re.M)   # steady: fewer iterations than a window
    assert row and int(row.group(1)) <= int(row.group(2)), proc.stdout[-2000:]
    # img/s printed to 0.1, from the unrounded s/iter
    assert float(row.group(4)) == pytest.approx(2 * gpus / float(row.group(3)), rel=0.01, abs=0.06)
    import json
    result = json.loads((tmp_path / 'r.json').read_text())
    assert len(result['iter_s']) == 4 and result['launch_to_iter'] == sorted(
        result['launch_to_iter'])


def test_time_to_speed_reads_mmengine_log_lines(load_script):
    """Epoch- and iteration-based lines, padded indices, and the validation summary line
    (no eta: an average, not an iteration) left out."""
    module = load_script('tools/analysis/time_to_speed.py')
    head = '2026/12/01 06:33:16 - mmengine - INFO - '
    lines = [head + 'Epoch(val) [1][  1/200]    eta: 0:08:26  time: 2.5463  data_time: 0.1',
             head + 'Iter(val) [ 7/50]    eta: 0:00:01  time: 0.0310  data_time: 0.0',
             head + 'Epoch(val) [1][200/200]    data_time: 0.0060  time: 0.0996']
    assert [m.group(3) for m in map(module.VAL_LINE.search, lines) if m] == ['2.5463', '0.0310']
    assert module.LOG_TIME.match(head + 'Epoch(train)  [1][  1/100]  lr: 1e-4  time: 3.1')
    assert module.LOG_TIME.match(head + 'Iter(train) [ 1/40]  lr: 1e-4  time: 3.1')
    # windows of 10 from iteration 7 on hold at most four slow ones: median 1
    assert module.steady_from([5] * 10 + [1] * 20, 1.0, 1.25) == 7
    assert module.steady_from([1] * 9, 1.0, 1.25) is None


def test_check_ddp_cpu(run_script):
    """Two processes on gloo, the demo detector (with an override after #), the hook's mode
    (eager on the CPU) against eager at fixed weights: the same gradients on both ranks, the
    same losses and gradients in both modes. (The modes differ on a GPU only: there the
    hook's mode is CUDA graphs; docs/benchmarks.md has that run.)"""
    import socket
    with socket.socket() as sock:   # a free port for the rendezvous
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    proc = run_script('-m', 'torch.distributed.run', '--nproc_per_node', 2, '--master_port', port,
                      'tools/analysis/check_ddp.py',
                      'configs/demo/mask_rcnn_mambaout_demo.py#model.rpn_head.feat_channels=64',
                      '--steps', 2, '--modes', 'hook', 'False', '--det-size', 128, 96, 96, 128,
                      '--fixed-weights')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r'^\| (hook|False) \| (\d) \| \((\d+), (\d+)\) \| ([\d.]+) \| [\d.e+-]+ \| '
                      r'(\d+) \| ([\d.e+-]+) \| ([\d.e+-]+) \| ([\d.e+-]+|-) \|$', proc.stdout, re.M)
    assert [r[:4] for r in rows] == [('hook', '1', '128', '96'), ('hook', '2', '96', '128'),
                                     ('False', '1', '128', '96'), ('False', '2', '96', '128')]
    assert all(r[5] == '0' and float(r[7]) == 0 for r in rows)
    assert [r[8] for r in rows] == ['-', '-', '0.00e+00', '0.00e+00']
    assert 'fixed weights=True' in proc.stdout
    assert 'OK: identical gradients on all ranks' in proc.stdout


def test_check_ddp_rank_differences(load_script):
    import torch
    module = load_script('tools/analysis/check_ddp.py')
    same = torch.tensor([1., float('inf'), -2.])
    assert module.rank_differences([same, same.clone()]) == (0, 0.)
    other = torch.tensor([1., float('inf'), -2.5])
    assert module.rank_differences([same, other, same]) == (1, 0.5)
    assert module.rank_differences([same, torch.tensor([1., float('-inf'), -2.])])[0] == 1
    ref = torch.tensor([3., 4.])
    assert module.relative_difference(torch.tensor([3., 4.5]), ref) == pytest.approx(0.1)
    assert module.relative_difference(same, ref[:1].expand(3)) is None   # inf: not compared
    assert module.relative_difference(ref, None) is None


def test_benchmark_scan_times_an_earlier_revisions_kernels(run_script, monkeypatch):
    # the kernels of a git revision beside today's backends, run by Triton's interpreter
    pytest.importorskip('triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    proc = run_script('tools/analysis/benchmark_scan.py', '--device', 'cpu', '--backends',
                      'reference', '--triton-at', 'HEAD', '--lengths', 20, '--dtypes', 'fp32',
                      '--dim', 4, '--N', 2, '--reps', 1, '--profile')
    assert proc.returncode == 0, proc.stderr[-3000:]
    for backend in ('reference', r'triton@HEAD'):
        # --profile's GPU column: n/a on the CPU
        assert re.search(rf'^\| {backend} \| 20 \| fp32 \| [\d.]+ \| n/a \| [\d.]+ \|.* n/a \|$',
                         proc.stdout, re.M), proc.stdout
    assert re.search(r'^triton@HEAD: the Triton kernels of commit [0-9a-f]{40}$', proc.stdout,
                     re.M)
    for rev in ('no-such-revision', '--help'):
        bad = run_script('tools/analysis/benchmark_scan.py', '--device', 'cpu', f'--triton-at={rev}')
        assert bad.returncode != 0
        assert f'error: --triton-at {rev}: git cannot show' in bad.stderr
        assert 'Traceback' not in bad.stderr


def test_an_earlier_revisions_scan_operators_do_not_replace_todays(load_script):
    pytest.importorskip('triton')
    from torch._library.custom_ops import OPDEFS

    from mmmambaout.ops.selective_scan import triton as today
    if not today._OPERATORS:
        pytest.skip('this torch has no torch.library.custom_op')
    earlier = load_script('tools/analysis/benchmark_scan.py').triton_kernels_at('HEAD')
    namespace = f'mmmambaout_at_{earlier.revision[:12]}'
    assert OPDEFS['mmmambaout::selective_scan_fwd'] is today._scan_fwd
    assert OPDEFS['mmmambaout::selective_scan_bwd'] is today._scan_bwd
    assert OPDEFS[f'{namespace}::selective_scan_fwd'] is earlier._scan_fwd
    assert earlier._scan_fwd is not today._scan_fwd


def test_benchmark_scan_sweep_picks_the_fastest_configs(load_script, monkeypatch):
    # the sweep's choice, with made-up times in place of kernels: the forward config by
    # forward time, the backward one by fwd+bwd time, then the backward's segment length
    # (multiples of its BLOCK_L shorter than L, then one segment), then the forward's;
    # the defaults restored without --tune
    pytest.importorskip('triton')
    from types import SimpleNamespace

    import torch

    from mmmambaout.ops.selective_scan import triton as tri
    module = load_script('tools/analysis/benchmark_scan.py')
    default = {k: {s: dict(c) for s, c in v.items()} for k, v in tri.CONFIGS.items()}
    fast_fwd = dict(BLOCK_L=32, BLOCK_D=2, num_warps=1)
    segments = {'fwd': [], 'bwd': []}

    def fake_bench(fn, device, reps=None, **kw):
        fwd = dict(tri.CONFIGS['float32']['fwd'])
        seg_l = fwd.pop('SEG_L')
        if fwd != fast_fwd:
            assert seg_l is None
            return 2.0
        segments['fwd'].append(seg_l)
        return 1.0 - 0.5 * (seg_l == 256)

    def fake_run_case(backend, inputs, device, reps, earlier=None):
        bwd = tri.CONFIGS['float32']['bwd']
        assert tri.CONFIGS['float32']['fwd'] == dict(fast_fwd, SEG_L=None)
        assert bwd['SEG_L'] is None or bwd['SEG_L'] % bwd['BLOCK_L'] == 0
        t = 5.0 - (bwd['BLOCK_L'] == 32) - (bwd['BLOCK_D'] == 8)
        if (bwd['BLOCK_L'], bwd['BLOCK_D']) == (32, 8):
            segments['bwd'].append(bwd['SEG_L'])
            t -= (bwd['SEG_L'] == 128)
        return 0.5, t, None, None

    monkeypatch.setattr(module, 'bench', fake_bench)
    monkeypatch.setattr(module, 'run_case', fake_run_case)
    args = SimpleNamespace(lengths=[300], dtypes=['fp32'], batch=1, dim=4, N=2)
    try:
        module.sweep(args, torch.device('cpu'), apply_best=True)
        assert tri.CONFIGS['float32']['fwd'] == dict(fast_fwd, SEG_L=256)
        assert tri.CONFIGS['float32']['bwd'] == dict(default['float32']['bwd'], BLOCK_L=32,
                                                     BLOCK_D=8, num_warps=4, SEG_L=128)
        # the grid's (32, 8, 4) once with the default SEG_L, then each segment length
        assert segments['bwd'] == [default['float32']['bwd']['SEG_L'], 64, 128, 256, None]
        assert segments['fwd'] == [None, 64, 128, 256, None]
        module.sweep(args, torch.device('cpu'), apply_best=False)
        assert tri.CONFIGS['float32']['bwd']['SEG_L'] == 128   # what --tune had left
    finally:
        tri.CONFIGS.clear()
        tri.CONFIGS.update(default)


def test_benchmark_scan_sweep_segments_only(load_script, monkeypatch):
    # --sweep segments: the configured forward and backward, only their segment lengths
    # timed (the backward's, then the forward's), nothing of the grid
    pytest.importorskip('triton')
    from types import SimpleNamespace

    import torch

    from mmmambaout.ops.selective_scan import triton as tri
    module = load_script('tools/analysis/benchmark_scan.py')
    default = {k: {s: dict(c) for s, c in v.items()} for k, v in tri.CONFIGS.items()}
    seen = {'fwd': [], 'bwd': []}

    def fake_bench(fn, device, reps=None, **kw):
        fwd = dict(tri.CONFIGS['float32']['fwd'])
        seen['fwd'].append(fwd.pop('SEG_L'))
        assert fwd == {k: v for k, v in default['float32']['fwd'].items() if k != 'SEG_L'}
        return 1.0 - 0.5 * (seen['fwd'][-1] == 128)

    def fake_run_case(backend, inputs, device, reps, earlier=None):
        bwd = dict(tri.CONFIGS['float32']['bwd'])
        seen['bwd'].append(bwd.pop('SEG_L'))
        assert bwd == {k: v for k, v in default['float32']['bwd'].items() if k != 'SEG_L'}
        return 0.5, 3.0 - (seen['bwd'][-1] == 64), None, None

    monkeypatch.setattr(module, 'bench', fake_bench)
    monkeypatch.setattr(module, 'run_case', fake_run_case)
    args = SimpleNamespace(lengths=[300], dtypes=['fp32'], batch=1, dim=4, N=2)
    try:
        module.sweep(args, torch.device('cpu'), apply_best=True, segments_only=True)
        assert seen['bwd'] == [64, 128, 256, None]   # multiples of BLOCK_L 16 below L
        assert seen['fwd'] == [64, 128, 256, None]
        assert tri.CONFIGS['float32']['bwd']['SEG_L'] == 64
        assert tri.CONFIGS['float32']['fwd']['SEG_L'] == 128
    finally:
        tri.CONFIGS.clear()
        tri.CONFIGS.update(default)


def test_benchmark_scan_host_time_needs_no_gpu(load_script):
    # --host-time: the Triton backend's Python per forward+backward on CPU tensors, every
    # launch a no-op (a real launch would need a GPU), Triton's launcher restored after
    pytest.importorskip('triton')
    from types import SimpleNamespace

    from triton.runtime.jit import JITFunction
    module = load_script('tools/analysis/benchmark_scan.py')
    launch = JITFunction.__getitem__
    args = SimpleNamespace(lengths=[40], dtypes=['fp32', 'bf16'], batch=1, dim=4, N=2)
    rows = module.host_time(args, {}, rounds=1, reps=4)
    assert [(r['backend'], r['L'], r['dtype']) for r in rows] == [
        ('triton', 40, 'fp32'), ('triton', 40, 'bf16')]
    assert all(r['host_us'] > 0 for r in rows)
    assert JITFunction.__getitem__ is launch


def test_scan_kernel_stats_reads_the_compiled_kernels(load_script):
    # registers, spills and SASS size of each kernel one forward+backward launches,
    # compiled for sm_90 on the CPU with Triton's bundled ptxas / nvdisasm
    pytest.importorskip('triton')
    import torch
    from triton.runtime.jit import JITFunction

    from mmmambaout.ops.selective_scan import triton as today
    module = load_script('tools/analysis/scan_kernel_stats.py')
    bench = load_script('tools/analysis/benchmark_scan.py')
    launch = JITFunction.__getitem__
    inputs = {k: v.detach() for k, v in bench.make_inputs(1, 4, 2, 40, torch.float32,
                                                         torch.device('cpu')).items()}
    seen = module.launches(today, inputs)
    assert JITFunction.__getitem__ is launch
    assert [k.__name__ for k, _, _ in seen] == ['_fwd_kernel', '_bwd_kernel']  # one segment
    stats = module.kernel_stats(*seen[0], arch=90)
    assert 0 < stats['registers'] <= 255 and stats['spill_bytes'] >= 0
    assert stats['sass_instructions'] > 100
