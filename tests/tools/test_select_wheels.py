"""tools/misc/select_wheels.py: excluding a package drops what only it needs."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'misc'))
from select_wheels import select  # noqa: E402


def item(name, version='1.0', requires=(), requested=False, extras=None):
    return dict(metadata=dict(name=name, version=version, requires_dist=list(requires)),
                requested=requested, requested_extras=extras)


REPORT = dict(
    environment=dict(python_version='3.11', python_full_version='3.11.7', sys_platform='linux',
                     platform_machine='x86_64', platform_system='Linux', os_name='posix',
                     implementation_name='cpython', platform_python_implementation='CPython'),
    install=[
        item('mmmambaout', requires=['torch>=2.1', 'numpy', 'mmdet==3.3.0',
                                      'mmcv-lite==2.1.0; extra == "lite"',
                                      'pytest; extra == "tests"'],
             requested=True, extras=['lite']),
        item('torch', requires=['filelock', 'numpy', 'cuda-bindings==12.9.4; platform_system == "Linux"',
                                'nvidia-cublas; platform_machine == "x86_64"',
                                'triton; python_version < "3.14"']),
        item('mmdet', requires=['numpy', 'Filelock; python_version < "3.12"', 'six']),
        item('mmcv_lite'), item('numpy'), item('filelock'), item('cuda-bindings', '12.9.4'),
        item('nvidia_cublas'), item('triton'), item('six'), item('pytest'),
    ])


def names(exclude, python=None):
    return [n for n, _ in select(REPORT, exclude, python)]


def test_nothing_excluded_keeps_everything_reached():
    assert names([]) == ['cuda-bindings', 'filelock', 'mmcv_lite', 'mmdet', 'numpy',
                         'nvidia_cublas', 'six', 'torch', 'triton']  # pytest: extra not asked


def test_exclusion_drops_what_only_it_needs():
    # numpy stays (mmdet needs it too); filelock stays only where mmdet's marker holds
    assert names(['torch']) == ['filelock', 'mmcv_lite', 'mmdet', 'numpy', 'six']
    assert names(['torch'], python='3.12') == ['mmcv_lite', 'mmdet', 'numpy', 'six']


def test_globs_and_normalized_names():
    assert 'nvidia_cublas' not in names(['NVIDIA-*'])
    assert 'mmcv_lite' not in names(['mmcv-lite'])
