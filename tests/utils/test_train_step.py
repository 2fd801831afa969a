"""mmmambaout.utils.train_step: what the benchmark tools build."""
import logging


def test_build_model_hides_the_init_log_and_restores_the_level(capsys):
    from mmengine.logging import MMLogger

    from mmmambaout.utils.train_step import build_model
    logger = MMLogger.get_current_instance()
    level = logger.level
    _, model = build_model('configs/demo/upernet_mambaout_demo.py', 'cpu')
    out = capsys.readouterr()
    # mmengine logs every parameter's initialisation at INFO when no log file is open
    assert 'Initialized by' not in out.out + out.err
    assert 'The value is the same before and after' not in out.out + out.err
    assert logger.level == level
    assert sum(p.numel() for p in model.parameters()) > 0


def test_quiet_logs_keep_warnings(capsys):
    from mmengine.logging import MMLogger

    from mmmambaout.utils.train_step import _quiet_mmengine_logs
    logger = MMLogger.get_current_instance()
    logger.setLevel(logging.INFO)
    with _quiet_mmengine_logs():
        logger.info('hidden line')
        logger.warning('shown line')
    logger.info('shown again')
    out = capsys.readouterr()
    assert 'hidden line' not in out.out + out.err
    assert 'shown line' in out.out + out.err and 'shown again' in out.out + out.err
