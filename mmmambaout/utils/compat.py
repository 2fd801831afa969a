"""Placeholder; filled in next commit."""


def apply_compat_patches():
    pass
