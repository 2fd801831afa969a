"""``import mmcv._ext`` finds mmmambaout's op backend when mmcv has no working compiled
extension, in any Python process, whether or not it imports mmmambaout.

mmcv-lite has no ``mmcv._ext``, so ``import mmcv.ops`` (and with it mmdet's and mmseg's
models, Inferencers and tools) fails unless something provides it first. mmmambaout's
wheel and editable install put ``mmmambaout-mmcv-ext.pth`` into site-packages; Python runs
its single line at start-up, which imports this module (nothing else) and appends
:class:`MmcvExtFinder` to ``sys.meta_path``. The finder answers for the one name
``mmcv._ext`` and only when it is imported:

* a compiled ``mmcv/_ext*.so`` that loads is used unchanged (a full mmcv build);
* one that fails to load (typically built for another torch) is replaced by the
  stand-in, with a warning;
* none: the stand-in from ``mmmambaout/ops/mmcv_backend.py``, loaded by path so that
  the rest of mmmambaout (which imports mmdet, which imports ``mmcv.ops``) is not
  imported in the middle of ``mmcv.ops``' own import.

``pip uninstall mmmambaout`` removes the ``.pth`` file and this module.
"""
import sys

EXT_NAME = 'mmcv._ext'
BACKEND_NAME = 'mmmambaout.ops.mmcv_backend'


class MmcvExtFinder:
    """A meta path finder for ``mmcv._ext`` alone (see the module docstring)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != EXT_NAME:
            return None
        from importlib.machinery import ModuleSpec, PathFinder
        compiled = PathFinder.find_spec(fullname, path)
        return ModuleSpec(fullname, _ExtLoader(compiled, path),
                          origin=compiled.origin if compiled else BACKEND_NAME)


class _ExtLoader:

    def __init__(self, compiled, path):
        self.compiled, self.path = compiled, path

    def create_module(self, spec):
        if self.compiled is not None:
            import importlib.util
            try:
                module = importlib.util.module_from_spec(self.compiled)
                self.compiled.loader.exec_module(module)
                return module
            except ImportError as err:
                import warnings
                warnings.warn(f'mmcv._ext exists but does not load ({err}); mmmambaout '
                              'replaces it with its torchvision-backed ops', stacklevel=2)
        import os
        mmcv_dir = (self.path or sys.modules['mmcv'].__path__)[0]
        return load_backend().build_ext_module(os.path.join(mmcv_dir, 'ops'))

    def exec_module(self, module):
        pass  # done in create_module, where a failure can still fall back


def load_backend():
    return load_submodule(BACKEND_NAME)


def load_submodule(name):
    """The module ``name`` of mmmambaout (one that needs no other part of the package),
    without running ``mmmambaout/__init__.py`` when mmmambaout is not imported yet: that
    imports torch, mmcv and OpenMMLab. Registered under its own name, so a later
    ordinary import returns the same module. Also what our tools use to report argument
    errors before those imports (``mmmambaout.utils.cli_base``)."""
    if name in sys.modules:
        return sys.modules[name]
    import importlib.util
    import os
    package = importlib.util.find_spec('mmmambaout')
    path = os.path.join(package.submodule_search_locations[0], *name.split('.')[1:]) + '.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def install() -> bool:
    """Put the finder in front of ``sys.meta_path`` (before the path finder, so that a
    compiled extension that fails to load can be replaced); True if it was not there."""
    if any(isinstance(f, MmcvExtFinder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, MmcvExtFinder())
    return True
