"""mmmambaout: MambaOut and Vim backbones for mmdetection / mmsegmentation / mmpretrain.

mmcv is not a hard requirement on purpose: mmcv (full, with compiled ops) and
mmcv-lite install into the same ``mmcv`` package, so requiring one would overwrite a
user's own full build with the other. Choose with an extra:

    pip install -e ".[lite]"      # no mmcv yet: mmcv-lite 2.1.0 + our op backend
    pip install -e .              # you already have a full mmcv 2.0/2.1 build: kept

Importing ``mmmambaout`` checks that some mmcv is installed and says which extra to
use if not.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = osp.dirname(osp.abspath(__file__))


MIM_FILES = ('model-index.yml', 'configs', 'tools')


def add_mim_extension():
    """mmmambaout/.mim/ holds model-index.yml, configs/ and tools/, where `mim` and
    mmmambaout.zoo look: copies in wheels and sdists, symbolic links into the checkout
    for an editable install (as mmdet's setup.py does), so edits show at once."""
    if any(cmd in sys.argv for cmd in ('editable_wheel', 'develop')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel')):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(HERE, 'mmmambaout', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(HERE, name), osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.isdir(dst) and not osp.islink(dst):
            shutil.rmtree(dst)
        elif osp.lexists(dst):
            os.remove(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        else:
            (shutil.copytree if osp.isdir(src) else shutil.copyfile)(src, dst)


# One line Python runs at start-up in every interpreter of the environment: it makes
# `import mmcv._ext` find mmmambaout's op backend when mmcv has no compiled one
# (mmmambaout_mmcv_finder.py; it imports nothing else). Removed on uninstall.
PTH_NAME = 'mmmambaout-mmcv-ext.pth'
PTH_LINE = ("import sys; exec('try:\\n import mmmambaout_mmcv_finder\\nexcept ImportError:\\n pass\\n"
            "else:\\n mmmambaout_mmcv_finder.install()')\n")


def _write_pth(directory):
    with open(osp.join(directory, PTH_NAME), 'w') as f:
        f.write(PTH_LINE)


class BuildPyWithPth(build_py):
    """Wheels: the .pth file at the root of the package data (site-packages)."""

    def run(self):
        super().run()
        if not getattr(self, 'editable_mode', False):
            _write_pth(self.build_lib)

    def get_outputs(self, *args, **kwargs):
        outputs = super().get_outputs(*args, **kwargs)
        if getattr(self, 'editable_mode', False):
            return outputs
        return outputs + [osp.join(self.build_lib, PTH_NAME)]


def _point_top_level_at_checkout(unpacked_wheel):
    """`mim` (0.3.9: get_installed_path, list, search, download) and mmengine find a
    package's files at ``os.path.join(<dist>.location, <first line of top_level.txt>)``
    (``pkg_resources``). An editable install (PEP 660) puts the dist-info into
    site-packages, so that is the location, and site-packages/mmmambaout does not exist:
    the package lives in the checkout. An absolute first line wins in ``os.path.join``, so
    the editable wheel's top_level.txt starts with the checkout's package directory (which
    holds .mim/, linked above); the plain names follow, for everything else that reads it.
    Wheels keep the standard file (their package is in site-packages, .mim copied in)."""
    dist_info = [name for name in os.listdir(unpacked_wheel) if name.endswith('.dist-info')]
    path = osp.join(unpacked_wheel, dist_info[0], 'top_level.txt')
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    with open(path, 'w') as f:
        f.write('\n'.join([osp.join(HERE, 'mmmambaout')] + names) + '\n')


class EditableWheelWithPth(editable_wheel):
    """Editable installs (pip install -e): the same .pth file in the editable wheel, and a
    top_level.txt through which `mim` finds the checkout (see above)."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        _write_pth(unpacked_wheel)
        _point_top_level_at_checkout(unpacked_wheel)
        return result


def read_version():
    scope = {}
    with open('mmmambaout/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


add_mim_extension()
setup(
    name='mmmambaout',
    version=read_version(),
    description='MambaOut (Gated CNN) and Vim backbones as OpenMMLab plugins',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmmambaout', 'mmmambaout.*']),
    py_modules=['mmmambaout_mmcv_finder'],
    cmdclass={'build_py': BuildPyWithPth, 'editable_wheel': EditableWheelWithPth},
    license='Apache-2.0',
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'torchvision',
        'numpy',
        # the releases our components subclass and the tests run on; mmmambaout/compat/
        # names the exact versions each of its patches was written for
        'mmengine>=0.10.7,<0.11',
        'mmdet>=3.3.0,<3.4',
        'mmsegmentation>=1.2.2,<1.3',
        'mmpretrain>=1.2.0,<1.3',
        'pycocotools',
        'ftfy',       # mmseg imports it without declaring it
        'regex',      # likewise
        'safetensors',
        'pyyaml',
        'tqdm',
        # mmengine 0.10.7 imports pkg_resources for cross-package `_base_` configs
        # (`mmdet::...`) and is_installed(); setuptools 81 removed it.
        'setuptools<81',
    ],
    extras_require={
        'lite': ['mmcv-lite==2.1.0'],
        # seaborn: mmdet's analyze_logs.py; click ... tabulate: openmim 0.3.9's own
        # requirements except opendatalab (which would downgrade setuptools, requests and
        # filelock): tools/setup_env.sh installs openmim itself with --no-deps
        'tests': ['pytest', 'timm>=1.0.16', 'seaborn', 'click', 'colorama', 'model-index',
                  'pandas', 'requests', 'rich', 'tabulate'],
    },
    package_data={'mmmambaout': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                                 '.mim/configs/**/*.yml', '.mim/tools/**/*.py',
                                 '.mim/tools/**/*.sh']},
    include_package_data=True,
    zip_safe=False,
)
