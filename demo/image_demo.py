"""Draw a trained detector's or segmentor's prediction on one image.

    python demo/image_demo.py IMG CONFIG --weights CKPT [--device cpu|cuda] [--out-dir DIR]
                              [--pred-score-thr 0.3]

The config's ``default_scope`` picks mmdet's ``DetInferencer`` (boxes and masks; boxes
scored below ``--pred-score-thr`` are not drawn) or mmseg's ``MMSegInferencer`` (the class
map blended over the image). The drawing goes to ``DIR/vis/<image name>`` (segmentation
also writes the raw label map to ``DIR/pred/``), and the script prints the path.

Nothing of mmmambaout is imported here: the config's ``custom_imports`` registers our
components when the config is read, as with mmdet's and mmseg's own tools. A missing image,
config or checkpoint is one ``error:`` line and exit status 2.
"""
import argparse
import os.path as osp
import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Draw a detector's or segmentor's prediction on an image")
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file of the model (detection or segmentation)')
    parser.add_argument('--weights', required=True, help='checkpoint file of that config')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda or cuda:N (default: cuda if available, else cpu)')
    parser.add_argument('--out-dir', default='outputs',
                        help='where the drawing is written, as OUT_DIR/vis/<image name> '
                        '(default: outputs)')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='detection only: boxes scored below this are not drawn '
                        '(default: 0.3)')
    return parser.parse_args(argv)


def check_inputs(args):
    for what, path in (('image', args.img), ('config', args.config),
                       ('checkpoint', args.weights)):
        if not osp.isfile(path):
            raise UserError(f'{what} not found: {path}')


def build_inferencer(cfg, weights, device):
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        return scope, DetInferencer(model=cfg, weights=weights, device=device,
                                    show_progress=False)
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        return scope, MMSegInferencer(model=cfg, weights=weights, device=device)
    raise UserError(f"this demo draws detection (default_scope='mmdet') and segmentation "
                    f"(default_scope='mmseg') predictions; the config says {scope!r}")


def main(argv=None):
    args = parse_args(argv)
    check_inputs(args)
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)  # imports the config's custom_imports (mmmambaout)
    scope, inferencer = build_inferencer(cfg, args.weights, args.device)
    if scope == 'mmdet':
        inferencer(args.img, out_dir=args.out_dir, pred_score_thr=args.pred_score_thr,
                   no_save_pred=True)
    else:
        inferencer(args.img, out_dir=args.out_dir)
    drawn = osp.join(args.out_dir, 'vis', osp.basename(args.img))
    if not osp.isfile(drawn):
        raise RuntimeError(f'the inferencer wrote no drawing at {drawn}')
    print(f'prediction drawn: {drawn}')
    return drawn


if __name__ == '__main__':
    try:
        main()
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
