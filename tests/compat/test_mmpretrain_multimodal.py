"""mmpretrain 1.2.0 under transformers >= 5: multimodal models switched off, only there."""
import warnings

import pytest

import mmmambaout  # noqa: F401  (applies mmmambaout.compat)
from mmmambaout.compat import UnsupportedVersionWarning, mmpretrain_multimodal


@pytest.fixture
def dependency(monkeypatch):
    import mmpretrain.utils.dependency as dependency
    monkeypatch.setattr(dependency, 'WITH_MULTIMODAL', True)
    return dependency


def apply_recording_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        results = [mmpretrain_multimodal.apply() for _ in range(3)]
    assert len(set(results)) == 1
    return results[0], [w for w in caught if issubclass(w.category, UnsupportedVersionWarning)]


def test_multimodal_importable_only_before_transformers_5():
    assert mmpretrain_multimodal.multimodal_importable(None)
    assert mmpretrain_multimodal.multimodal_importable('4.46.3')
    assert not mmpretrain_multimodal.multimodal_importable('5.17.0')


def test_switched_off_on_mmpretrain_1_2_0_with_transformers_5(dependency, fake_versions):
    fake_versions(mmpretrain='1.2.0', transformers='5.0.0')
    applied, warned = apply_recording_warnings()
    assert applied is True and not warned
    assert dependency.WITH_MULTIMODAL is False


@pytest.mark.parametrize('transformers', [None, '4.46.3'])
def test_nothing_to_do_before_transformers_5(dependency, fake_versions, transformers):
    fake_versions(mmpretrain='1.3.0', transformers=transformers)  # not even a warning
    applied, warned = apply_recording_warnings()
    assert applied is False and not warned
    assert dependency.WITH_MULTIMODAL is True


def test_other_mmpretrain_left_alone_with_one_warning(dependency, fake_versions):
    fake_versions(mmpretrain='1.3.0', transformers='5.0.0')
    applied, warned = apply_recording_warnings()
    assert applied is False and len(warned) == 1
    assert 'written for mmpretrain 1.2.0' in str(warned[0].message)
    assert 'mmpretrain 1.3.0 is installed' in str(warned[0].message)
    assert dependency.WITH_MULTIMODAL is True
