"""tools/analysis/benchmark_scaling.py and ablation_demo.py on the CPU: the exponent fit,
the table and files, the ablation's runs and how it reads their metrics (the measurements
themselves are GPU runs, docs/research.md)."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'analysis'))
import ablation_demo  # noqa: E402
import benchmark_scaling  # noqa: E402


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
