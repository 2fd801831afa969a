"""mmmambaout.utils.train_step: what the benchmark tools build."""
import logging

import pytest


@pytest.fixture
def mmengine_records(request):
    """A fresh current mmengine logger at INFO without a log file (with one, mmengine
    writes the init lines to the file instead of logging them) and the messages it
    emits; it does not propagate, so caplog would not see them. The previous current
    logger is current again afterwards."""
    from mmengine.logging import MMLogger
    name = f'test_train_step.{request.node.name}'
    logger = MMLogger.get_instance(name, log_level='INFO')
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger.addHandler(Collect(level=logging.DEBUG))
    assert MMLogger.get_current_instance() is logger
    yield logger, records
    MMLogger._instance_dict.pop(name)


def test_build_model_hides_the_init_log_and_restores_the_level(mmengine_records):
    from mmmambaout.utils.train_step import build_model
    logger, records = mmengine_records
    level = logger.level
    _, model = build_model('configs/demo/upernet_mambaout_demo.py', 'cpu')
    # mmengine logs every parameter's initialisation at INFO when no log file is open
    assert not [r for r in records if 'Initialized by' in r or 'same before and after' in r]
    assert logger.level == level
    assert sum(p.numel() for p in model.parameters()) > 0


def test_quiet_logs_keep_warnings(mmengine_records):
    from mmmambaout.utils.train_step import _quiet_mmengine_logs
    logger, records = mmengine_records
    with _quiet_mmengine_logs():
        logger.info('hidden line')
        logger.warning('shown line')
    logger.info('shown again')
    assert records == ['shown line', 'shown again']
