"""tools/analysis/benchmark_scaling.py, ablation_demo.py and compare_seeds.py on the CPU:
the exponent fit, the table and files, the ablation's runs and how it reads their metrics,
the seed comparison's runs and tables (the measurements themselves are GPU runs,
docs/research.md)."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'analysis'))
import ablation_demo  # noqa: E402
import benchmark_scaling  # noqa: E402
import compare_seeds  # noqa: E402


def test_exponent_fit_recovers_a_power_law():
    points = [(L, 3e-4 * L**1.5) for L in (196, 1024, 4096, 9216)]
    assert benchmark_scaling.fit_exponent(points) == pytest.approx(1.5, abs=1e-12)


def test_scaling_table_csv_and_plot_on_cpu(tmp_path, capsys):
    rows, exponents = benchmark_scaling.main([
        '--models', 'mambaout_t', '--sizes', '32', '48', '64', '--iters', '1', '--warmup', '0',
        '--device', 'cpu', '--batch', '1', '--csv', str(tmp_path / 's.csv'), '--plot', str(tmp_path / 's.png')])
    out = capsys.readouterr().out
    assert [r[1:3] for r in rows] == [(32, 4), (48, 9), (64, 16)]
    assert all(t > 0 for *_, t, _ in rows) and math.isfinite(exponents['mambaout_t'])
    assert '| mambaout_t |' in out and 'exponent b' in out
    assert len((tmp_path / 's.csv').read_text().splitlines()) == 4
    assert (tmp_path / 's.png').stat().st_size > 1000


def test_ablation_variants_differ_only_in_the_backbone():
    _, base, _ = ablation_demo.commands('det', 'mambaout', 1, 'd', 'w')
    _, hybrid, _ = ablation_demo.commands('det', 'hybrid', 1, 'd', 'w')
    config, vim, train = ablation_demo.commands('seg', 'vim', 2, 'd', 'w')
    assert set(hybrid) - set(base) == {
        "model.backbone.token_mixers=('bi_ssm','bi_ssm','bi_ssm','gated_cnn')"}
    assert 'randomness.seed=1' in base and 'randomness.seed=2' in vim
    assert config == 'configs/demo/upernet_vim_demo.py' and train[1] == 'tools/train.py'


def test_ablation_reads_the_test_metrics(tmp_path):
    log = tmp_path / 'run' / 'test' / '20260101_000000' / '20260101_000000.json'
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({'lr': 1}) + '\n' + json.dumps(
        {'coco/bbox_mAP': 0.41, 'coco/segm_mAP': 0.38, 'time': 1.0}) + '\n')
    assert ablation_demo.metric_values(str(tmp_path / 'run'), 'det') == {
        'coco/bbox_mAP': 0.41, 'coco/segm_mAP': 0.38}
    assert ablation_demo.metric_values(str(tmp_path / 'run'), 'seg') is None


def test_compare_seeds_config_overrides_and_command():
    assert compare_seeds.split_config("c.py#a.b=1,m.mixers=('x','y'),c=2") == (
        'c.py', ['a.b=1', "m.mixers=('x','y')", 'c=2'])
    assert compare_seeds.split_config('c.py') == ('c.py', [])
    cmd = compare_seeds.train_command('configs/demo/upernet_mambaout_demo.py#a=1', 3, 'w',
                                      ['--cfg-options', 'x=1', 'y=2', '--amp'])
    assert cmd[1:] == [str(Path(compare_seeds.ROOT) / 'tools' / 'train.py'),
                       str(Path(compare_seeds.ROOT) / 'configs/demo/upernet_mambaout_demo.py'),
                       '--work-dir', 'w',
                       '--cfg-options', 'x=1', 'y=2', 'randomness.seed=3', 'a=1', '--amp']
    with pytest.raises(SystemExit, match='not found'):
        compare_seeds.resolve('configs/nothere.py')


def test_compare_seeds_summary_verdicts():
    results = {('a', 0): {1: {'mIoU': 0.10}, 2: {'mIoU': 0.30}},
               ('a', 1): {1: {'mIoU': 0.12}, 2: {'mIoU': 0.34}},
               ('b', 0): {2: {'mIoU': 0.33}}, ('b', 1): {2: {'mIoU': 0.35}},
               ('c', 0): {2: {'mIoU': 0.60}}, ('c', 1): {2: {'mIoU': 0.61}}}
    lines = compare_seeds.summarise(['a', 'b', 'c'], [0, 1], results)
    assert '| a | 1 | 0.110 ± 0.014 (0.100, 0.120) |' in lines
    assert '| b | 1 |' not in '\n'.join(lines)   # no validation of b at step 1
    assert '| b | mIoU | 2 | +0.020 | 0.020 / 0.040 | within the spread |' in lines
    assert '| c | mIoU | 2 | +0.285 | 0.010 / 0.040 | outside the spread |' in lines


def test_compare_seeds_compares_the_last_validation_every_run_logged():
    # a run stopped early (time limit): the verdict uses step 1, the last common one
    results = {('a', 0): {1: {'mIoU': 0.10}, 2: {'mIoU': 0.30}},
               ('a', 1): {1: {'mIoU': 0.12}, 2: {'mIoU': 0.34}},
               ('b', 0): {1: {'mIoU': 0.50}, 2: {'mIoU': 0.31}}, ('b', 1): {1: {'mIoU': 0.52}}}
    lines = compare_seeds.summarise(['a', 'b'], [0, 1], results)
    assert '| b | mIoU | 1 | +0.400 | 0.020 / 0.020 | outside the spread |' in lines
    assert '| b | 2 | 0.310 ± 0.000 (0.310) |' in lines     # shown, not compared
    assert compare_seeds.summarise(['a', 'b'], [0, 1], {('a', 0): {}, ('b', 0): {}}) == [
        'no validation metrics in the runs\' logs (did validation run? set '
        'train_cfg.val_interval, or --metrics)']


def test_run_parallel_stops_at_the_deadline(tmp_path):
    import subprocess
    import sys
    import time
    script = ('import signal, sys, time\n'
              'signal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n'
              'time.sleep(float(sys.argv[1]))\n')
    ended, stopped = {}, []
    compare_seeds.run_parallel(
        [0.0, 60.0, 61.0, 62.0], 2,
        lambda t: subprocess.Popen([sys.executable, '-c', script, str(t)]),
        lambda job, rc: ended.setdefault(len(ended), (job, rc)), poll=0.1,
        deadline=time.monotonic() + 3, on_stop=stopped.append)
    # the quick one ended by itself; the two long runs that started were interrupted
    # (SIGINT: exit 130), the fourth never started
    assert ended[0] == (0.0, 0)
    assert sorted(ended[i] for i in (1, 2)) == [(60.0, 130), (61.0, 130)] and len(ended) == 3
    assert stopped == [60.0, 61.0]


def test_compare_seeds_prints_the_end_of_a_failed_runs_log(tmp_path, capsys):
    """A run that fails shows why in compare_seeds' own output (its log may be on a
    machine the reader cannot open): here a dataset folder that does not exist."""
    missing = tmp_path / 'no_dataset_here'
    status = compare_seeds.main([
        'configs/demo/upernet_mambaout_demo.py', '--seeds', '0', '--work-dir',
        str(tmp_path / 'w'), '--', '--cfg-options',
        f'train_dataloader.dataset.data_root={missing}/'])
    out = capsys.readouterr().out
    assert status == 1
    failed = out.split('seed 0: failed (exit ', 1)[1].split('config0: ')[0]
    assert f'{missing}/' in failed and 'error: dataset' in failed, out


def test_compare_seeds_trains_and_compares_on_cpu(ade_root, tmp_path, capsys):
    """Two configs (the second with an override), one seed, validation after each of
    two iterations, both runs at once (the tables over several seeds: the test above)."""
    opts = [f'{k}_dataloader.{o}' for k in ('train', 'val', 'test') for o in (
        f'dataset.data_root={ade_root}/', 'num_workers=0', 'persistent_workers=False')]
    status = compare_seeds.main([
        'configs/demo/upernet_mambaout_demo.py',
        'configs/demo/upernet_mambaout_demo.py#model.backbone.drop_path_rate=0.1',
        '--seeds', '3', '--parallel', '2', '--work-dir', str(tmp_path), '--',
        '--cfg-options', *opts, 'train_cfg.max_iters=2', 'train_cfg.val_interval=1', 'train_cfg.val_begin=1',
        'train_dataloader.batch_size=2'])
    out = capsys.readouterr().out
    assert status == 0, out + ''.join(p.read_text()[-2000:] for p in tmp_path.glob('*.log'))
    for config in ('configs/demo/upernet_mambaout_demo.py',
                   'configs/demo/upernet_mambaout_demo.py#model.backbone.drop_path_rate=0.1'):
        for step in (1, 2):
            assert f'| {config} | {step} | ' in out, out
    assert '| configs/demo/upernet_mambaout_demo.py#model.backbone.drop_path_rate=0.1 | mIoU |' in out
    # the override and the seed reached the run
    config = next((tmp_path / 'config1_seed3').glob('*.py')).read_text()
    assert 'drop_path_rate=0.1' in config and 'seed=3' in config
