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

HERE = osp.dirname(osp.abspath(__file__))


def add_mim_extension():
    """Copy model-index.yml, configs/ and tools/ into mmmambaout/.mim/ for wheels and
    sdists, where `mim` and mmmambaout.zoo look; editable installs read the repo."""
    if not any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel')):
        return
    mim_path = osp.join(HERE, 'mmmambaout', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in ('model-index.yml', 'configs', 'tools'):
        src, dst = osp.join(HERE, name), osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.isdir(dst) and not osp.islink(dst):
            shutil.rmtree(dst)
        elif osp.lexists(dst):
            os.remove(dst)
        (shutil.copytree if osp.isdir(src) else shutil.copyfile)(src, dst)


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
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'torchvision',
        'numpy',
        'mmengine==0.10.7',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'mmpretrain==1.2.0',
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
        'tests': ['pytest', 'timm>=1.0.16'],
    },
    package_data={'mmmambaout': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                                 '.mim/configs/**/*.yml', '.mim/tools/**/*.py',
                                 '.mim/tools/**/*.sh']},
    include_package_data=True,
    zip_safe=False,
)
