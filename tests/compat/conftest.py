import importlib.metadata

import pytest


@pytest.fixture
def fake_versions(monkeypatch):
    """``fake_versions(mmengine='0.11.0', transformers=None)``: ``importlib.metadata.version``
    reports these (None: not installed), the real version for any other name; and this
    process has not warned about any compat change yet."""
    from mmmambaout.compat import _version
    monkeypatch.setattr(_version, '_warned', set())
    real = importlib.metadata.version

    def fake(**versions):
        def version(name):
            if name not in versions:
                return real(name)
            if versions[name] is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return versions[name]
        monkeypatch.setattr(importlib.metadata, 'version', version)

    return fake
