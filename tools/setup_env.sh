#!/usr/bin/env bash
# Sourced by the README commands: activate a virtualenv (the active one, else ./.venv,
# created on first use) and install mmmambaout with its test extra into it, once.
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -d .venv ] || python3 -m venv .venv
    source .venv/bin/activate
fi
if ! python -c "import mmmambaout, pytest, timm, seaborn, mim" >/dev/null 2>&1; then
    python -m pip install -q --upgrade pip
    # torch first, pinned to the wheels that pip on this platform resolves quickly
    python -m pip install -q "torch>=2.1,<=2.14.1" "torchvision<=0.29.1"
    # mmcv: keep a full mmcv build if present, else mmcv-lite (see setup.py)
    if python -c "import mmcv._ext" >/dev/null 2>&1; then extras="tests"; else extras="lite,tests"; fi
    python -m pip install -q -e ".[${extras}]"
    # `mim train/test/download mmmambaout` (tests/tools/test_openmmlab_entry_points.py):
    # openmim without its opendatalab requirement, which would downgrade setuptools,
    # requests and filelock; its other requirements are in the tests extra
    python -m pip install -q --no-deps "openmim==0.3.9"
fi
