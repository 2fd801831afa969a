"""Token count per stage or layer against the MambaOut paper's long-sequence criterion.

The paper (arXiv 2405.07992, Sec. 3) counts a Transformer block's FLOPs as
``24 D^2 L + 4 D L^2`` (projections and MLP linear in the token count L, attention's two
matrix products quadratic); the quadratic term outweighs the linear one when
``L > tau = 6 D``. Its examples, ViT-S (D 384, tau 2304) with patch 16: L 196 on ImageNet
at 224x224, 4000 on COCO at 800x1280, 1024 on ADE20K at 512x512.

For every stage of a MambaOut backbone, or the layers of a Vim / ViT, this prints the token
grid, L, the channels D, tau = 6D, L / tau, and how much of the FLOPs would be quadratic if
the token mixer were attention at that L: of the mixer alone (projections 8 D^2 L against
4 D L^2: ``L / (L + 2D)``) and of the whole block (``L / (L + 6D)``). Vim's sequence
includes its middle class token; the ViT rows, as in the paper, count patches only.

    python tools/analysis/sequence_length.py configs/mask_rcnn_mambaout_t_1x_coco.py
    python tools/analysis/sequence_length.py vit_small --shape 800 1280
    python tools/analysis/sequence_length.py mambaout_tiny vim_small --shape 512 512

A config's input size defaults to its task's (detection 800x1280, segmentation 512x512,
classification 224x224); a backbone name's to 224x224.
"""
import argparse
import math
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 512), 'mmpretrain': (224, 224)}
VIT_DIMS = {'tiny': 192, 'small': 384, 'base': 768}  # DeiT / ViT widths, 12 layers
BACKBONE_TYPES = {'mambaout': 'MambaOut', 'vim': 'Vim'}


def criterion(length: int, dims: int) -> dict:
    """The paper's measures for L tokens of D channels."""
    return dict(L=length, D=dims, tau=6 * dims, ratio=length / (6 * dims),
                mixer_quadratic=length / (length + 2 * dims),
                block_quadratic=length / (length + 6 * dims))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv_grid(conv, hw):
    return tuple(_conv_out(s, k, st, p) for s, k, st, p in
                 zip(hw, conv.kernel_size, conv.stride, conv.padding))


def mambaout_rows(backbone, hw):
    """(name, grid) per stage: the stem's two stride-2 convs, then each downsample."""
    grid = hw
    for conv in (m for m in backbone.stem.modules() if m.__class__.__name__ == 'Conv2d'):
        grid = _conv_grid(conv, grid)
    rows = []
    for i, stage in enumerate(backbone.stages):
        convs = [m for m in stage.downsample.modules() if m.__class__.__name__ == 'Conv2d']
        for conv in convs:
            grid = _conv_grid(conv, grid)
        rows.append((f'stage {i} ({len(stage.blocks)} blocks)', grid, backbone.dims[i], 0))
    return rows


def vim_rows(backbone, hw):
    grid = _conv_grid(backbone.patch_embed.proj, hw)
    cls = 1 if getattr(backbone, 'cls_token', None) is not None else 0
    return [(f'layers 0-{len(backbone.layers) - 1}', grid, backbone.embed_dims, cls)]


def vit_rows(arch, hw, patch=16):
    grid = tuple(s // patch for s in hw)
    return [(f'ViT-{arch[0].upper()} layers 0-11, patch {patch}', grid, VIT_DIMS[arch], 0)]


def build_backbone(spec):
    """A backbone from a config's ``model.backbone`` or a name like ``mambaout_tiny``;
    returns (description, backbone or None, rows function, default shape)."""
    import mmmambaout  # noqa: F401  (registers the backbones)
    from mmmambaout.models.backbones import MambaOut, Vim
    if spec.endswith('.py'):
        from mmengine.config import Config
        cfg = Config.fromfile(spec)
        backbone_cfg = dict(cfg.model.backbone)
        shape = DEFAULT_SHAPES.get(cfg.get('default_scope'), (224, 224))
    else:
        family, _, arch = spec.partition('_')
        if family == 'vit' and arch in VIT_DIMS:
            return spec, arch, 'vit', (224, 224)
        if family not in BACKBONE_TYPES or not arch:
            raise SystemExit(f'error: {spec!r} is neither a config (.py) nor a backbone name '
                             '(mambaout_ARCH, vim_ARCH, vit_tiny|small|base)')
        backbone_cfg, shape = dict(type=BACKBONE_TYPES[family], arch=arch), (224, 224)
    backbone_type = backbone_cfg.pop('type').split('.')[-1]
    backbone_cfg.pop('init_cfg', None)
    classes = {'MambaOut': MambaOut, 'Vim': Vim}
    if backbone_type not in classes:
        raise SystemExit(f'error: {spec}: backbone type {backbone_type!r} is not one this tool '
                         f'knows ({", ".join(classes)})')
    backbone = classes[backbone_type](**backbone_cfg)
    return spec, backbone, backbone_type, shape


def table(spec, shape=None):
    name, backbone, kind, default = build_backbone(spec)
    hw = tuple(shape or default)
    rows = {'vit': lambda: vit_rows(backbone, hw), 'MambaOut': lambda: mambaout_rows(backbone, hw),
            'Vim': lambda: vim_rows(backbone, hw)}[kind]()
    out = [f'\n{name} at {hw[0]}x{hw[1]} (H x W)',
           '| stage / layers | tokens | L | D | tau = 6D | L / tau | attention mixer: quadratic '
           'share | block: quadratic share |',
           '|---|---|---|---|---|---|---|---|']
    results = []
    for label, grid, dims, extra in rows:
        c = criterion(math.prod(grid) + extra, dims)
        results.append(dict(c, name=label, grid=grid))
        tokens = f'{grid[0]}x{grid[1]}' + (f' + {extra}' if extra else '')
        out.append(f'| {label} | {tokens} | {c["L"]} | {dims} | {c["tau"]} | {c["ratio"]:.3f} '
                   f'| {c["mixer_quadratic"]:.1%} | {c["block_quadratic"]:.1%} |')
    return '\n'.join(out), results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('specs', nargs='+', metavar='CONFIG_OR_BACKBONE',
                        help='a config file, or mambaout_ARCH / vim_ARCH / vit_ARCH')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: the task\'s, see above)')
    args = parser.parse_args(argv)
    print('command: python ' + ' '.join(sys.argv))
    for spec in args.specs:
        if spec.endswith('.py') and not osp.isfile(spec):
            parser.exit(2, f'error: config file not found: {spec}\n')
        print(table(spec, args.shape)[0])
    print('\nL > tau (L / tau > 1): the quadratic term of attention would outweigh the linear '
          'one (the paper\'s long-sequence criterion).')


if __name__ == '__main__':
    main()
