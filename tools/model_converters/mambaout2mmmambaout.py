#!/usr/bin/env python
"""Convert an official (yuweihao/MambaOut) or timm MambaOut checkpoint to mmmambaout keys.

    python tools/model_converters/mambaout2mmmambaout.py SRC DST

SRC: ``.pth`` / ``.safetensors`` (official release file or timm's ``model.safetensors``).
DST: ``.pth`` (``{'state_dict': ...}``) or ``.safetensors`` (flat). Keys are those of a
whole mmpretrain ``ImageClassifier`` with ``MambaOut`` + ``MambaOutClsHead``:
``backbone.*`` and ``head.*``. The same file loads into a detector / segmentor backbone
with ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` (the ``backbone.`` prefix is
recognised, the head keys are dropped), or as ``load_from`` of a classifier config.
Converting is optional: the backbone and the head also read SRC directly.
"""
import argparse
import os
import os.path as osp
import sys


def _cli_base():
    """mmmambaout.utils.cli_base (standard library only) without the package's __init__
    (torch, mmcv, OpenMMLab: seconds), so that argument errors are reported at once."""
    import importlib.util
    name = 'mmmambaout.utils.cli_base'
    if name not in sys.modules:
        spec = importlib.util.find_spec('mmmambaout')
        pkg_dirs = list(spec.submodule_search_locations) if spec else []
        pkg_dirs.append(osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', 'mmmambaout'))
        path = next(p for p in (osp.join(d, 'utils', 'cli_base.py') for d in pkg_dirs)
                    if osp.isfile(p))
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


cli_base = _cli_base()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official or timm MambaOut checkpoint (.pth/.safetensors)')
    parser.add_argument('dst', help='output file (.pth or .safetensors)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='drop the classifier head keys')
    cli_base.add_debug_arg(parser)
    return parser.parse_args(argv)


def convert(src, dst, backbone_only=False):
    import torch

    from mmmambaout.checkpoint import (checkpoint_format, extract_state_dict,
                                       load_checkpoint_file, load_mambaout_state_dict,
                                       mambaout_model_state_dict)
    raw = extract_state_dict(load_checkpoint_file(src))
    fmt = checkpoint_format(raw)
    state_dict = load_mambaout_state_dict(src)
    if backbone_only:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('head.')}
    state_dict = {k: v.contiguous() for k, v in mambaout_model_state_dict(state_dict).items()}
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    if dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(state_dict, dst)
    else:
        torch.save({'state_dict': state_dict}, dst)
    print(f'converted {len(state_dict)} tensors ({fmt} format) from {src} to {dst}')
    return state_dict


def main(argv=None):
    args = parse_args(argv)
    # user errors before anything is read: missing, not a checkpoint, needs code to load
    fix = 'Give the official or timm MambaOut checkpoint to convert (.pth or .safetensors).'
    cli_base.check_checkpoint_path(args.src, 'SRC', fix)
    from mmmambaout.utils.checkpoint_check import check_checkpoint_loads
    check_checkpoint_loads(args.src, 'SRC', fix)
    convert(args.src, args.dst, args.backbone_only)


if __name__ == '__main__':
    sys.exit(cli_base.run_cli(main))
