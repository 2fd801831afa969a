"""Shared by the tool tests: tiny generated demo datasets and running a script of the repo
in a subprocess (from the repository root, unbuffered, one OpenMP thread)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from mmmambaout.datasets.demo_data import make_coco_demo
    return make_coco_demo(tmp_path_factory.mktemp('demo'), num_train=8, num_val=1,
                          seed=0)['data_root']


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    from mmmambaout.datasets.demo_data import make_ade_demo
    return make_ade_demo(tmp_path_factory.mktemp('demo'), num_train=8, num_val=2,
                         seed=0)['data_root']


@pytest.fixture(scope='session')
def load_script():
    """``load_script('tools/x.py')`` -> the tool script as a module, for testing its
    functions without running it."""
    import importlib.util

    def load(path):
        spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def run_script():
    """``run_script('tools/x.py', *args)`` -> CompletedProcess (text output captured)."""

    def run(*args, timeout=300):
        env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
        return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=timeout)

    return run
