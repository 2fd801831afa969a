"""Placeholder until the torchvision-backed backend lands (being written now)."""


def install_mmcv_ops_backend():
    return False
