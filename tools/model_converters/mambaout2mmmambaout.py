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

import torch

from mmmambaout.checkpoint import (checkpoint_format, extract_state_dict, load_checkpoint_file,
                                   load_mambaout_state_dict, mambaout_model_state_dict)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official or timm MambaOut checkpoint (.pth/.safetensors)')
    parser.add_argument('dst', help='output file (.pth or .safetensors)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='drop the classifier head keys')
    return parser.parse_args(argv)


def convert(src, dst, backbone_only=False):
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
    convert(args.src, args.dst, args.backbone_only)


if __name__ == '__main__':
    main()
