"""The version check every change in :mod:`mmmambaout.compat` makes before it applies."""
import importlib.metadata
import warnings


class UnsupportedVersionWarning(UserWarning):
    """A change to a third-party library was not applied: the installed version is not one
    it was written for."""


_warned = set()  # (distribution, change) pairs warned about in this process


def installed_version(distribution):
    """The installed version of ``distribution`` (a pip name), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def written_for(distribution, versions, change, consequence):
    """True if ``distribution`` is installed at one of ``versions``. Otherwise warn, once
    per process and change, that ``change`` is not applied and what that means
    (``consequence``), and return False."""
    found = installed_version(distribution)
    if found in versions:
        return True
    if (distribution, change) not in _warned:
        _warned.add((distribution, change))
        warnings.warn(
            f'mmmambaout: {change} was written for {distribution} {" / ".join(versions)}, '
            f'but {distribution} {found or "(not installed)"} is installed, so '
            f'{distribution} is left unchanged; {consequence}',
            UnsupportedVersionWarning, stacklevel=3)
    return False
