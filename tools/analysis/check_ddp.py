"""Check a config's training step under DDP: the same gradients on every rank after each
backward, and the same losses whatever the compile mode, on fixed batches.

Run it with one process per GPU (on a machine without GPUs: processes on the CPU, gloo):

    python -m torch.distributed.run --nproc_per_node 2 tools/analysis/check_ddp.py \\
        configs/mask_rcnn_mambaout_t_1x_coco.py --amp --steps 8 --modes hook True False \\
        --det-size 1344 800 1216 800 800 1344

For each mode the model is built from the same seed (drop path off: compiled and eager
code draw its random numbers differently), wrapped in mmengine's
``MMDistributedDataParallel`` as ``tools/train.py`` wraps it, and trained ``--steps``
steps on fixed synthetic batches (each rank its own images, the sizes in turn, as
keep-ratio resizing gives). After each backward every rank's gradients are gathered:
DDP all-reduces them, so the largest difference from rank 0's must be 0. Modes:
``hook`` (what ``MambaOutCompileHook`` chooses for this run: CUDA graphs on GPUs),
``True`` (compiled without graphs), ``False`` (eager) or a ``torch.compile`` mode.
Each later mode's losses and (unscaled) gradients are compared with the first mode's, step
by step: the relative loss difference and ``||g - g_first|| / ||g_first||``. A rank that
got wrong gradients from a graph replay would show in the second, since DDP makes every
rank's gradients the same whatever they are. ``--fixed-weights`` (learning rate 0) keeps
every step at the same weights, so that later steps compare like the first; otherwise
the paths drift apart with the rounding (fp16 under ``--amp``), which moves the random
sampling of detection heads. Exit status 1 if the ranks' gradients differ or a loss or
gradient differs by more than ``--rtol`` (steps with inf gradients, the first steps of
AMP's dynamic loss scale, are not compared).
"""
import argparse
import os
import os.path as osp
import platform
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from mmmambaout.utils.synthetic import batch_for  # noqa: E402
from mmmambaout.utils.train_step import (build_train_step, parse_cfg_options,  # noqa: E402
                                         resolve_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--modes', nargs='+', default=['hook', 'True'],
                   help="'hook', 'True', 'False' or a torch.compile mode; the first is the "
                        'reference of the loss comparison')
    p.add_argument('--steps', type=int, default=8)
    p.add_argument('--batch', type=int, default=2, help='images per rank')
    p.add_argument('--amp', action='store_true', help='AmpOptimWrapper (fp16, dynamic loss scale)')
    p.add_argument('--det-size', type=int, nargs='+', default=[1333, 800], metavar='W H',
                   help='one or more W H pairs, one batch each, taken in turn')
    p.add_argument('--objects', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--rtol', type=float, default=1e-3,
                   help="largest relative difference of a step's loss and gradients from "
                        "the first mode's")
    p.add_argument('--fixed-weights', action='store_true',
                   help='learning rate 0: every step at the initial weights')
    p.add_argument('--cfg-options', nargs='+', default=[])
    args = p.parse_args(argv)
    if len(args.det_size) % 2:
        p.error(f'--det-size takes W H pairs, got {args.det_size}')
    args.sizes = [tuple(args.det_size[i:i + 2]) for i in range(0, len(args.det_size), 2)]
    return args


def mode_options(args, mode):
    """The cfg options of one mode: the user's, drop path off, ``compile_stages`` (compiled
    modes with the memory budget of the config's ``MambaOutCompileHook``, so that they
    differ from ``hook`` in the graphs alone)."""
    name, _, overrides = args.config.partition('#')
    opts = parse_cfg_options(args.cfg_options)
    if args.fixed_weights:
        opts['optim_wrapper.optimizer.lr'] = 0.
    cfg = resolve_config(name)
    cfg.merge_from_dict(parse_cfg_options(overrides.split(',') if overrides else []))
    backbone = cfg.model.get('backbone', {})
    if 'drop_path_rate' in backbone or backbone.get('type') in ('MambaOut', 'Vim'):
        opts['model.backbone.drop_path_rate'] = 0.
    if mode != 'hook':
        opts['model.backbone.compile_stages'] = {'True': True, 'False': False}.get(mode, mode)
        hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') == 'MambaOutCompileHook']
        if (mode != 'False' and hooks and backbone.get('compile_memory_budget') is None
                and 'model.backbone.compile_memory_budget' not in opts):
            opts['model.backbone.compile_memory_budget'] = hooks[0].get('memory_budget', 0.5)
    return opts


def cudagraph_counters():
    """Inductor's CUDA graph counters: recordings' non-static inputs (> 0 once a graph was
    recorded) and skips (a graph inductor declined to record)."""
    from torch._dynamo.utils import counters
    return {k: v for k, v in counters['inductor'].items() if k.startswith('cudagraph')}


def flat_grads(params):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach()
                      .float().flatten() for p in params])


def rank_differences(gathered):
    """``(elements that differ from rank 0's, largest finite difference)`` over every
    rank's float32 gradients. Bitwise: the first steps of AMP's dynamic loss scale give inf
    gradients, which are equal when they are the same inf."""
    ref = gathered[0]
    differ = sum(int((g.view(torch.int32) != ref.view(torch.int32)).sum()) for g in gathered)
    diff = max(float((g - ref).nan_to_num(0., 0., 0.).abs().max()) for g in gathered)
    return differ, diff


def relative_difference(a, b):
    """``||a - b|| / ||b||``; None where either is not finite."""
    if a is None or b is None or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return None
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def run_mode(args, mode, device, reference=None):
    """Train ``args.steps`` steps in ``mode``; ``[(loss, grad norm, elements that differ
    from rank 0's, largest difference, gradient relative difference to reference), ...]``,
    the unscaled gradients of each step (on the CPU, rank 0; for the first mode only) and
    the CUDA graph counters' increase. ``reference``: the first mode's gradients."""
    from mmengine.model import MMDistributedDataParallel
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)
    cfg, model, optim_wrapper, _ = build_train_step(
        args.config, device, args.amp, args.batch, args.sizes[0], objects=args.objects,
        cfg_options=mode_options(args, mode))
    ddp = MMDistributedDataParallel(
        module=model, device_ids=[device.index] if device.type == 'cuda' else None,
        broadcast_buffers=False, find_unused_parameters=cfg.get('find_unused_parameters', False))
    batches = [batch_for(cfg, args.batch, size, (512, 512), objects=args.objects,
                         seed=1000 * rank + i) for i, size in enumerate(args.sizes)]
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(args.seed + 1)   # the samplers' draws: the same in every mode
    before = cudagraph_counters()
    rows, kept = [], []
    for i in range(args.steps):
        data = batches[i % len(batches)]
        with optim_wrapper.optim_context(ddp):   # what MMDistributedDataParallel.train_step does
            data = model.data_preprocessor(data, training=True)
            losses = ddp._run_forward(data, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))
        grads = flat_grads(params)
        gathered = [torch.empty_like(grads) for _ in range(world)]
        dist.all_gather(gathered, grads)
        differ, diff = rank_differences(gathered)
        scaler = getattr(optim_wrapper, 'loss_scaler', None)
        grads = grads.cpu() / (float(scaler.get_scale()) if scaler is not None else 1.)
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        ref = reference[i] if reference is not None else None
        rows.append((loss.item(), float(grads.norm()), differ, diff,
                     relative_difference(grads, ref)))
        if reference is None and rank == 0:
            kept.append(grads)
    graphs = {k: v - before.get(k, 0) for k, v in cudagraph_counters().items()}
    del ddp, model, optim_wrapper
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return rows, kept, graphs


def main(argv=None):
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group('nccl' if cuda else 'gloo')   # torchrun's RANK, WORLD_SIZE, ...
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
    results, reference = {}, None
    for mode in args.modes:
        rows, kept, graphs = run_mode(args, mode, device, reference)
        results[mode] = rows, graphs
        if reference is None:
            reference = kept if rank == 0 else [None] * args.steps
    failed = False
    if rank == 0:
        import mmdet
        import mmengine
        name = torch.cuda.get_device_name(device) if cuda else platform.processor() or 'CPU'
        print('command: python -m torch.distributed.run --nproc_per_node '
              f'{world} ' + ' '.join(sys.argv))
        print(f'{world} processes ({dist.get_backend()}), device: {name}; torch '
              f'{torch.__version__} (CUDA {torch.version.cuda}); mmengine {mmengine.__version__}, '
              f'mmdet {mmdet.__version__}; batch {args.batch} per rank, amp={args.amp}, '
              f'fixed weights={args.fixed_weights}, sizes {args.sizes}')
        ref = results[args.modes[0]][0]
        first = args.modes[0]
        print(f'| mode | step | size | loss | grad norm | gradient elements that differ '
              f'between ranks (bitwise) | largest difference | loss relative difference to '
              f'{first} | gradient relative difference to {first} |')
        print('|---' * 9 + '|')
        for mode, (rows, graphs) in results.items():
            for i, (loss, norm, differ, diff, grad_rel) in enumerate(rows):
                rel = abs(loss - ref[i][0]) / max(abs(ref[i][0]), 1e-12)
                finite = torch.isfinite(torch.tensor(norm)).item()
                failed |= differ != 0 or (finite and not (rel <= args.rtol and (
                    mode == first or grad_rel is not None and grad_rel <= args.rtol)))
                grad_cell = '-' if mode == first or grad_rel is None else f'{grad_rel:.2e}'
                print(f'| {mode} | {i + 1} | {args.sizes[i % len(args.sizes)]} | {loss:.6f} | '
                      f'{norm:.6g} | {differ} | {diff:.3g} | {rel:.2e} | {grad_cell} |')
        for mode, (_, graphs) in results.items():
            print(f'{mode}: CUDA graph counters (rank 0) {graphs or "none"}')
        print('FAILED: ranks differ, or a loss or gradient is off by more than --rtol' if failed
              else f'OK: identical gradients on all ranks; losses and gradients within rtol '
                   f'{args.rtol}')
    flag = torch.tensor([int(failed)], device=device)
    dist.broadcast(flag, 0)
    dist.destroy_process_group()
    return int(flag.item())


if __name__ == '__main__':
    sys.exit(main())
