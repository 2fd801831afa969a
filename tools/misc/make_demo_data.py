"""Make the small demo datasets (COCO-style shapes, ADE20K-style scenes).

    python tools/misc/make_demo_data.py --out data/demo --kind all

Data that is already complete with the same parameters is kept unless --force.
"""
import argparse
import importlib.util
import json
import os.path as osp
import time
from collections import Counter

# Loaded by path: works from a checkout without installing, and skips the package's
# __init__ (torch, mmcv ops backend, model registration), which takes seconds to import
# and which this module (numpy, cv2, pycocotools only) does not need.
_MODULE_PATH = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', 'mmmambaout',
                        'datasets', 'demo_data.py')
_spec = importlib.util.spec_from_file_location('_mmmambaout_demo_data', _MODULE_PATH)
demo_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_data)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='root of the demo data')
    parser.add_argument('--kind', choices=('coco', 'ade', 'all'), default='all')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--min-size', type=int, default=160, help='shortest image side')
    parser.add_argument('--max-size', type=int, default=256, help='longest image side')
    parser.add_argument('--force', action='store_true', help='regenerate even if complete')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 32 <= args.min_size <= args.max_size:
        raise SystemExit('need 32 <= --min-size <= --max-size')
    start = time.perf_counter()
    paths = demo_data.make_demo_data(args.out, kind=args.kind, num_train=args.num_train,
                           num_val=args.num_val, image_size=(args.min_size, args.max_size),
                           seed=args.seed, force=args.force)
    print(f'demo data ready under {args.out} ({time.perf_counter() - start:.1f} s)')
    for kind, kind_paths in paths.items():
        print(f'  {kind}: {kind_paths["data_root"]}')
        if kind == 'coco':
            for split in ('train', 'val'):
                with open(kind_paths[f'{split}_ann_file']) as f:
                    ann = json.load(f)
                per_class = Counter(a['category_id'] for a in ann['annotations'])
                counts = ', '.join(f'{name} {per_class[i + 1]}'
                                   for i, name in enumerate(demo_data.DEMO_CLASSES))
                print(f'    {split}: {len(ann["images"])} images, '
                      f'{len(ann["annotations"])} instances ({counts})')


if __name__ == '__main__':
    main()
