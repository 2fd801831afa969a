"""Check mmcv's ops on CUDA (fp32 and fp16) against the plain-PyTorch references.

    python tools/analysis/check_ops_cuda.py [--device cuda:0] [--seed 0]

Runs mmcv.ops.nms / roi_align / sigmoid_focal_loss (through mmmambaout's torchvision-
backed ``mmcv._ext``, or a real compiled one if installed: the script says which) on
CUDA tensors, and the references of tests/ops/op_references.py in float64 on the CPU
from the same (already rounded) inputs, so only the op's own error is measured. Prints
the max abs error per op, dtype and quantity, and exits 1 if one exceeds its tolerance:
1e-4 (fp32) or 1e-2 (fp16) times max(1, max |reference|); for nms the kept indices
must be identical.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

import torch

import mmmambaout  # noqa: F401  (provides mmcv._ext when mmcv has none)
import mmcv.ops

REPO = Path(__file__).resolve().parents[2]
TOL = {torch.float32: 1e-4, torch.float16: 1e-2}


def load_references():
    path = REPO / 'tests' / 'ops' / 'op_references.py'
    spec = importlib.util.spec_from_file_location('op_references', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(name, dtype, quantity, actual, ref):
    """A table row: max abs error of actual against the float64 reference, tolerance."""
    ref = ref.detach().double().cpu()
    err = (actual.detach().double().cpu() - ref).abs().max().item() if ref.numel() else 0.0
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    return name, dtype, quantity, err, TOL[dtype] * scale


def check_roi_align(ref_ops, device, dtype, gen):
    rows = []
    feat = torch.randn(2, 16, 40, 56, generator=gen).to(dtype)
    xy = torch.rand(150, 2, generator=gen) * 70 - 5  # some boxes leave the 56x40 map
    wh = torch.rand(150, 2, generator=gen) * 30
    rois = torch.cat([torch.randint(0, 2, (150, 1), generator=gen).float(), xy, xy + wh], 1)
    rois[:5, 3:] = rois[:5, 1:3]  # zero-area boxes
    rois = rois.to(dtype)
    for aligned in (True, False):
        for sampling_ratio in (0, 2):
            for scale in (1.0, 0.5):
                r = rois.clone()
                r[:, 1:] /= scale
                x = feat.to(device, copy=True).requires_grad_()
                out = mmcv.ops.roi_align(x, r.to(device), (7, 7), scale, sampling_ratio,
                                         'avg', aligned)
                g = torch.randn(out.shape, generator=gen).to(dtype)
                (out * g.to(device)).sum().backward()
                x_ref = feat.double().requires_grad_()
                ref = ref_ops.roi_align_ref(x_ref, r.double(), (7, 7), scale, sampling_ratio,
                                            aligned)
                (ref * g.double()).sum().backward()
                name = f'roi_align aligned={aligned} ratio={sampling_ratio} scale={scale}'
                rows.append(compare(name, dtype, 'output', out, ref))
                rows.append(compare(name, dtype, 'grad input', x.grad, x_ref.grad))
    return rows


def check_focal_loss(ref_ops, device, dtype, gen):
    rows = []
    logits = (torch.randn(500, 20, generator=gen) * 3).to(dtype)
    target = torch.randint(0, 21, (500,), generator=gen)  # 20 is background
    weight = (torch.rand(20, generator=gen) + 0.5).to(dtype)
    for w in (None, weight):
        for gamma, alpha in ((2.0, 0.25), (1.5, 0.75)):
            x = logits.to(device, copy=True).requires_grad_()
            out = mmcv.ops.sigmoid_focal_loss(x, target.to(device), gamma, alpha,
                                              None if w is None else w.to(device), 'none')
            g = (torch.rand(out.shape, generator=gen) + 0.5).to(dtype)
            (out * g.to(device)).sum().backward()
            x_ref = logits.double().requires_grad_()
            ref = ref_ops.sigmoid_focal_loss_ref(x_ref, target, gamma, alpha,
                                                 None if w is None else w.double())
            (ref * g.double()).sum().backward()
            name = f'sigmoid_focal_loss gamma={gamma} alpha={alpha} weight={w is not None}'
            rows.append(compare(name, dtype, 'output', out, ref))
            rows.append(compare(name, dtype, 'grad input', x.grad, x_ref.grad))
    return rows


def check_nms(ref_ops, device, dtype, gen):
    rows = []
    # integer corners: exact in fp16, and every IoU is a ratio of exact integers, so the
    # kernel's and the reference's IoU round alike and no box flips at the threshold
    xy = (torch.rand(800, 2, generator=gen) * 200).round()
    boxes = torch.cat([xy, xy + (torch.rand(800, 2, generator=gen) * 60).round() + 1], 1)
    scores = torch.rand(800, generator=gen)
    tied = (scores * 4).floor() / 4  # four score levels: many ties
    for name, s in (('nms', scores), ('nms tied scores', tied)):
        for offset in (0, 1):
            for iou in (0.3, 0.6):
                b, sc = boxes.to(dtype), s.to(dtype)
                _, inds = mmcv.ops.nms(b.to(device), sc.to(device), iou, offset=offset)
                ref = ref_ops.nms_ref(b.double(), sc.double(), iou, offset)
                same = torch.equal(inds.cpu(), ref)
                diff = 0 if same else len(set(inds.tolist()) ^ set(ref.tolist())) or 1
                rows.append((f'{name} offset={offset} iou={iou}', dtype,
                             'kept indices differing', float(diff), 0.0))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit('CUDA is not available: this check runs the ops on a GPU')
    ext = sys.modules['mmcv._ext']
    backend = 'compiled mmcv._ext' if getattr(ext, '__file__', None) else \
        'mmmambaout torchvision backend'
    print(f'mmcv {mmcv.__version__}, ops from: {backend}; torch {torch.__version__}, '
          f'{torch.cuda.get_device_name(args.device)}')

    ref_ops = load_references()
    rows = []
    for dtype in (torch.float32, torch.float16):
        gen = torch.Generator().manual_seed(args.seed)
        for check in (check_nms, check_roi_align, check_focal_loss):
            rows += check(ref_ops, args.device, dtype, gen)

    width = max(len(r[0]) for r in rows)
    print(f"{'op':<{width}}  {'dtype':<8} {'quantity':<22} {'max abs err':>12} "
          f"{'tolerance':>10}  ok")
    failed = 0
    for name, dtype, quantity, err, tol in rows:
        ok = err <= tol
        failed += not ok
        print(f'{name:<{width}}  {str(dtype)[6:]:<8} {quantity:<22} {err:>12.3e} '
              f"{tol:>10.0e}  {'yes' if ok else 'NO'}")
    print(f'{len(rows) - failed}/{len(rows)} within tolerance')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
