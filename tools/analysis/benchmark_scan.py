"""Benchmark the selective-scan backends at Vim shapes.

For each backend (mamba_ssm's CUDA kernel when importable, Triton, the chunked PyTorch
reference, and a naive sequential loop that materialises (batch, dim, L, N) like
mamba_ssm's own ``selective_scan_ref``), each sequence length and input dtype: the
median time of the forward and of forward+backward, the peak memory of
forward+backward (total, inputs included, and above the inputs), and the memory
roofline beside it: the bytes that must be read and written once, over the card's
bandwidth (measured with a device-to-device copy, bytes read plus written).

Default shapes are Vim-S at detection resolution (batch 2, dim 768, N 16, L 4000) and
at ImageNet resolution (L 197), with softplus, z, D and delta_bias.

    python tools/analysis/benchmark_scan.py                      # CUDA, all backends
    python tools/analysis/benchmark_scan.py --sweep              # Triton launch configs
    python tools/analysis/benchmark_scan.py --sweep segments     # only the segment lengths
    python tools/analysis/benchmark_scan.py --device cpu --lengths 197 --dtypes fp32
    python tools/analysis/benchmark_scan.py --backends triton --triton-at 709f39e
    python tools/analysis/benchmark_scan.py --profile            # + GPU time: host-bound?
    python tools/analysis/benchmark_scan.py --host-time --triton-at REV   # no GPU needed

``--triton-at REV`` also times the Triton kernels as they were at git revision REV (backend
``triton@REV``), in the same process as today's: a kernel change against its parent.
"""
import argparse
import atexit
import contextlib
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from mmmambaout.ops.selective_scan import BACKENDS, available_backends, selective_scan

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def naive_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=False):
    """The sequential recurrence over (batch, dim, L, N) tensors, as upstream's reference."""
    dtype = u.dtype
    u, delta, B, C = u.float(), delta.float() + delta_bias[:, None], B.float(), C.float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    G = B.shape[1]
    B = B.repeat_interleave(dim // G, dim=1)
    C = C.repeat_interleave(dim // G, dim=1)
    dA = torch.exp(delta[..., None] * A[:, None, :])  # (b, d, L, N)
    dBu = (delta * u)[..., None] * B.transpose(-1, -2)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(L):
        h = dA[:, :, t] * h + dBu[:, :, t]
        ys.append((h * C[:, :, :, t]).sum(-1))
    out = (torch.stack(ys, -1) + u * D[:, None]) * F.silu(z.float())
    return out.to(dtype)


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRITON_MODULE = 'mmmambaout/ops/selective_scan/triton.py'


def triton_kernels_at(rev):
    """The Triton scan module as it was at git revision ``rev``, loaded beside today's.
    Its torch.library operators get their own namespace (``mmmambaout_at_<sha>``), so
    today's module keeps ``torch.ops.mmmambaout`` and each module runs its own kernels."""
    def git(*args):
        try:
            return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True)
        except OSError as exc:
            raise SystemExit(f'error: --triton-at needs git and a git checkout of this '
                             f'repository ({exc})')
    sha = git('rev-parse', '--verify', '--end-of-options', f'{rev}^{{commit}}')
    src = git('show', f'{sha.stdout.strip()}:{TRITON_MODULE}') if sha.returncode == 0 else sha
    if sha.returncode != 0 or src.returncode != 0:
        raise SystemExit(f'error: --triton-at {rev}: git cannot show {TRITON_MODULE} at that '
                         f'revision ({src.stderr.strip()[:200]}); name a commit of this '
                         'repository that has it')
    sha = sha.stdout.strip()
    namespace = f'mmmambaout_at_{sha[:12]}'
    code = (src.stdout.replace("'mmmambaout::", f"'{namespace}::")
            .replace('torch.ops.mmmambaout.', f'torch.ops.{namespace}.'))
    # triton.jit reads a kernel's source from its file, so the module needs one
    fd, path = tempfile.mkstemp(prefix=f'scan_triton_{sha[:12]}_', suffix='.py')
    with os.fdopen(fd, 'w') as f:
        f.write(code)
    atexit.register(os.remove, path)
    spec = importlib.util.spec_from_file_location(osp.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.revision = sha
    return module


def make_inputs(batch, dim, N, L, dtype, device, seed=0):
    g = torch.Generator(device='cpu').manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3))
                   + math.log(1e-3))
    args = dict(
        u=rnd(batch, dim, L).to(dtype), delta=(rnd(batch, dim, L) * 0.5).to(dtype),
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1),
        B=rnd(batch, 1, N, L).to(dtype), C=rnd(batch, 1, N, L).to(dtype),
        D=torch.ones(dim), z=rnd(batch, dim, L).to(dtype),
        delta_bias=dt + torch.log(-torch.expm1(-dt)))  # inverse softplus of dt
    return {k: v.to(device).requires_grad_() for k, v in args.items()}


def roofline_bytes(batch, dim, N, L, dtype, backward):
    """Bytes read and written once: forward reads u, delta, z, B, C, writes out;
    the backward also reads dout and writes du, ddelta, dz, dB, dC."""
    el = torch.finfo(dtype).bits // 8
    seq, bc = batch * dim * L * el, batch * N * L * el
    small = (dim * N + 2 * dim) * 4
    fwd = 4 * seq + 2 * bc + small
    bwd = 7 * seq + 4 * bc + 2 * small  # reads u, delta, z, dout; writes du, ddelta, dz
    return fwd + (bwd if backward else 0)


def measure_bandwidth(device):
    if device.type != 'cuda':
        return None
    x = torch.empty(256 * 2 ** 20, dtype=torch.float32, device=device)  # 1 GiB
    y = torch.empty_like(x)
    t = bench(lambda: y.copy_(x), device, reps=20)
    return 2 * x.numel() * 4 / (t * 1e-3)


def bench(fn, device, reps=None, warmup=3, slow=False):
    """Median milliseconds of fn(); ``slow``: few plain repetitions, not do_bench."""
    if slow:
        warmup = 1
    elif device.type == 'cuda':
        try:
            from triton.testing import do_bench
            return do_bench(fn, warmup=25, rep=100 if reps is None else 10 * reps,
                            return_mode='median')
        except ImportError:
            pass
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps or 10):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def kernel_ms(fn, device, iters=10):
    """Milliseconds per call that the GPU spends in what ``fn`` launches (kernels,
    memsets, copies; torch.profiler), against which a wall time shows the host's share;
    None off CUDA."""
    if device.type != 'cuda':
        return None
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    field = ('self_device_time_total' if all(hasattr(e, 'self_device_time_total') for e in events)
             else 'self_cuda_time_total')   # torch < 2.4
    total = sum(getattr(e, field) for e in events)
    return total / iters / 1e3


def run_case(backend, args, device, reps, earlier=None, profile=False):
    """``earlier``: {'triton@REV': module} of :func:`triton_kernels_at`. Returns the
    forward and forward+backward milliseconds, the peak memory and that above the
    inputs, and with ``profile`` the forward+backward's GPU time (:func:`kernel_ms`)."""
    names = list(args)
    grad_out = torch.randn_like(args['u'])

    if backend == 'naive':
        def forward():
            return naive_scan(**args, delta_softplus=True)
    elif earlier and backend in earlier:
        def forward():
            return earlier[backend].selective_scan_triton(**args, delta_softplus=True)
    else:
        def forward():
            return selective_scan(**args, delta_softplus=True, backend=backend)

    def fwd_bwd():
        for k in names:
            args[k].grad = None
        forward().backward(grad_out)

    slow = backend == 'naive'
    with torch.no_grad():
        t_fwd = bench(forward, device, reps, slow=slow)
    t_fb = bench(fwd_bwd, device, reps, slow=slow)
    peak = above = None
    if device.type == 'cuda':
        for k in names:
            args[k].grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fwd_bwd()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        above = peak - base
    if profile:   # not for the naive loop: ten more slow passes
        return t_fwd, t_fb, peak, above, None if slow else kernel_ms(fwd_bwd, device)
    return t_fwd, t_fb, peak, above


def header(device):
    lines = [f'command: {" ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)}',
             f'python {platform.python_version()}, torch {torch.__version__}']
    try:
        import triton
        lines[-1] += f', triton {triton.__version__}'
    except ImportError:
        pass
    try:
        import mamba_ssm
        lines[-1] += f', mamba_ssm {mamba_ssm.__version__}'
    except Exception:
        lines[-1] += ', mamba_ssm not importable'
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        lines.append(f'card: {p.name}, {p.multi_processor_count} SMs, '
                     f'{p.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}, '
                     f'capability {p.major}.{p.minor}')
    else:
        lines.append(f'device: cpu ({platform.processor() or platform.machine()}, '
                     f'{torch.get_num_threads()} threads)')
    return lines


def segment_lengths(L, multiple):
    """Segment lengths to try: multiples of ``multiple`` from 64 to 2048 shorter than
    ``L``, then None (one segment, no parallel segments)."""
    return [x for x in (64, 128, 256, 512, 1024, 2048) if x % multiple == 0 and x < L] + [None]


def sweep(args_ns, device, apply_best=False, segments_only=False):
    """Time Triton launch configs at the first length, for each dtype: the forward config
    (chunk length, channels per program, warps; one segment) by forward time, then the
    backward config by forward+backward time with the fastest forward, then the
    backward's segment length, then the forward's. ``segments_only``: only the two
    segment lengths, the other parameters as in ``CONFIGS``. With ``apply_best``, keep
    the fastest configs for the table."""
    from mmmambaout.ops.selective_scan import triton as tri
    L = args_ns.lengths[0]
    grid = [(bl, bd, nw) for bl in (16, 32, 64) for bd, nw in
            ((1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 4))]
    rows = []

    def fwd_time():
        with torch.no_grad():
            return bench(lambda: selective_scan(**inputs, delta_softplus=True,
                                                backend='triton'), device)

    def fastest_bwd(configs, best):
        """``(fwd+bwd ms, config)`` of the fastest backward config, ``best`` included."""
        for c in configs:
            cfg['bwd'] = c
            _, t_fb, _, _ = run_case('triton', inputs, device, None)
            print(f'L={L} {dname} fwd {cfg["fwd"]} bwd {c}: fwd+bwd {t_fb:.3f} ms',
                  flush=True)
            rows.append(dict(L=L, dtype=dname, fwd=dict(cfg['fwd']), bwd=dict(c),
                             fwd_bwd_ms=t_fb))
            if best is None or t_fb < best[0]:
                best = (t_fb, dict(c))
        return best

    for dname in args_ns.dtypes:
        key = 'float32' if dname == 'fp32' else '16bit'
        cfg = tri.CONFIGS[key]
        default = {k: dict(v) for k, v in cfg.items()}
        inputs = make_inputs(args_ns.batch, args_ns.dim, args_ns.N, L, DTYPES[dname], device)
        if segments_only:   # the configured forward and backward; lengths timed below
            best_fwd = (math.inf, dict(default['fwd'], SEG_L=None))
            cfg['fwd'] = dict(best_fwd[1])
            best = None
        else:
            best_fwd = None
            for bl, bd, nw in grid:
                cfg['fwd'] = dict(BLOCK_L=bl, BLOCK_D=bd, num_warps=nw, SEG_L=None)
                t = fwd_time()
                print(f'L={L} {dname} fwd {cfg["fwd"]}: {t:.3f} ms', flush=True)
                rows.append(dict(L=L, dtype=dname, fwd=dict(cfg['fwd']), fwd_ms=t))
                if best_fwd is None or t < best_fwd[0]:
                    best_fwd = (t, dict(cfg['fwd']))
            cfg['fwd'] = best_fwd[1]
            # the backward's configs (the default segment length, where it fits), then
            # its segment lengths with the fastest
            configs = [dict(default['bwd'], BLOCK_L=bl, BLOCK_D=bd, num_warps=nw)
                       for bl, bd, nw in grid]
            for c in configs:
                if c['SEG_L'] is not None and c['SEG_L'] % c['BLOCK_L']:
                    c['SEG_L'] = None
            best = fastest_bwd(configs, None)
        best_bwd = best[1] if best else default['bwd']
        best = fastest_bwd([dict(best_bwd, SEG_L=x)
                            for x in segment_lengths(L, best_bwd['BLOCK_L'])], best)
        cfg['bwd'] = best[1]
        # the forward's segment length: a multiple of its chunk and of the saved-state
        # interval (the backward's chunk)
        multiple = math.lcm(cfg['fwd']['BLOCK_L'], cfg['bwd']['BLOCK_L'])
        for x in segment_lengths(L, multiple):
            cfg['fwd'] = dict(best_fwd[1], SEG_L=x)
            t = fwd_time()
            print(f'L={L} {dname} fwd {cfg["fwd"]}: {t:.3f} ms', flush=True)
            rows.append(dict(L=L, dtype=dname, fwd=dict(cfg['fwd']), fwd_ms=t))
            if t < best_fwd[0]:
                best_fwd = (t, dict(cfg['fwd']))
        cfg['fwd'] = best_fwd[1]
        print(f'best {dname}: fwd {cfg["fwd"]} ({best_fwd[0]:.3f} ms) bwd {best[1]} '
              f'(fwd+bwd {best[0]:.3f} ms, with the forward before its segments)', flush=True)
        if not apply_best:
            cfg.update(default)
    return rows


@contextlib.contextmanager
def stubbed_launches(record=False):
    """Inside, every Triton kernel launch does nothing; yields a list that, with
    ``record``, collects ``(kernel, {param: value}, {option: value})`` of each launch."""
    from triton.runtime.jit import JITFunction
    seen = []

    def getitem(kernel, grid):
        def launch(*args, **kwargs):
            if record:
                options = {k: kwargs.pop(k) for k in ('num_warps', 'num_stages')
                           if k in kwargs}
                seen.append((kernel, dict(zip(kernel.arg_names, args), **kwargs), options))
        return launch

    original = JITFunction.__getitem__
    JITFunction.__getitem__ = getitem
    try:
        yield seen
    finally:
        JITFunction.__getitem__ = original


def host_time(args_ns, earlier, rounds=7, reps=200):
    """Microseconds of Python per eager forward+backward of the Triton backend (today's
    and each ``triton@REV``), with every kernel launch replaced by a no-op, on CPU
    tensors: what the host spends around the kernels, measurable without a GPU. Not in
    it: Triton's own launch work and the CUDA allocator's. The few PyTorch operators
    around the kernels (zeroed gradient buffers, dtype casts) do their work on the CPU
    here, which a GPU does not; so a short sequence (L 197) shows the Python, a long one
    adds CPU memsets. Median over ``rounds`` of ``reps`` calls; rows as printed."""
    try:
        from mmmambaout.ops.selective_scan import triton as tri
    except ImportError as exc:
        raise SystemExit(f'error: --host-time needs triton installed ({exc})')
    modules = {'triton': tri, **earlier}
    rows = []
    print('| backend | L | dtype | fwd+bwd host us (launches as no-ops) |\n|---|---|---|---|')
    with stubbed_launches():
        for L in args_ns.lengths:
            for dname in args_ns.dtypes:
                inputs = make_inputs(args_ns.batch, args_ns.dim, args_ns.N, L, DTYPES[dname],
                                     torch.device('cpu'))
                grad_out = torch.randn_like(inputs['u'])
                for name, module in modules.items():
                    def step():
                        for t in inputs.values():
                            t.grad = None
                        module.selective_scan_triton(**inputs, delta_softplus=True
                                                     ).backward(grad_out)
                    for _ in range(reps // 4):
                        step()
                    times = []
                    for _ in range(rounds):
                        t0 = time.perf_counter()
                        for _ in range(reps):
                            step()
                        times.append((time.perf_counter() - t0) / reps * 1e6)
                    us = sorted(times)[rounds // 2]
                    print(f'| {name} | {L} | {dname} | {us:.1f} |', flush=True)
                    rows.append(dict(backend=name, L=L, dtype=dname, host_us=us))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--dim', type=int, default=768)
    p.add_argument('--N', type=int, default=16)
    p.add_argument('--lengths', type=int, nargs='+', default=[4000, 197])
    p.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=list(DTYPES))
    p.add_argument('--backends', nargs='+', default=None,
                   help=f'default: available of {BACKENDS} plus naive')
    p.add_argument('--naive-max-length', type=int, default=4000,
                   help='skip the naive loop above this length')
    p.add_argument('--reps', type=int, default=None, help='timed repetitions (CPU)')
    p.add_argument('--sweep', nargs='?', const='all', choices=['all', 'segments'],
                   help="time Triton launch configs ('segments': only the segment "
                        'lengths, the rest as configured)')
    p.add_argument('--tune', nargs='?', const='all', choices=['all', 'segments'],
                   help='sweep, then run the table with the fastest Triton config')
    p.add_argument('--naive-dtypes', nargs='+', default=['fp32'],
                   help='dtypes for which to time the naive loop')
    p.add_argument('--profile', action='store_true',
                   help='add the GPU time of forward+backward (torch.profiler): the rest '
                        'of the wall time is the host')
    p.add_argument('--json', default=None, help='also write the rows to this file')
    p.add_argument('--host-time', action='store_true',
                   help='no GPU needed: the Python time per eager forward+backward of the '
                        'Triton backend (and --triton-at revisions), kernel launches as '
                        'no-ops on CPU tensors')
    p.add_argument('--triton-at', nargs='+', default=[], metavar='REV',
                   help='also time the Triton kernels of these git revisions (triton@REV)')
    a = p.parse_args()
    device = torch.device('cpu' if a.host_time else a.device)
    if (a.triton_at or a.host_time) and (a.sweep or a.tune):
        p.error('--triton-at and --host-time time fixed kernels; leave out --sweep / --tune')
    if a.sweep and a.tune:
        p.error('--tune already sweeps: give --sweep or --tune, not both')
    if a.host_time and (a.backends or a.profile or a.device != 'cuda'):
        p.error('--host-time times the Triton backend on CPU tensors: leave out --backends, '
                '--profile and --device')
    earlier = {f'triton@{rev}': triton_kernels_at(rev) for rev in a.triton_at}
    for line in header(device):
        print(line)
    for name, module in earlier.items():
        print(f'{name}: the Triton kernels of commit {module.revision}')
    if a.host_time:
        rows = host_time(a, earlier)
        if a.json:
            with open(a.json, 'w') as f:
                json.dump(dict(header=header(device), rows=rows), f, indent=1)
        return
    if a.sweep or a.tune:
        rows = sweep(a, device, apply_best=bool(a.tune),
                     segments_only=(a.tune or a.sweep) == 'segments')
        if a.json:
            with open(a.json + '.sweep', 'w') as f:
                json.dump(rows, f, indent=1)
        if not a.tune:
            return
    if 'triton' in available_backends(device):
        from mmmambaout.ops.selective_scan import triton as tri
        print(f'triton configs: {tri.CONFIGS}')
    bw = measure_bandwidth(device)
    if bw:
        print(f'measured copy bandwidth: {bw / 1e12:.2f} TB/s (read + write)')
    backends = (a.backends or list(available_backends(device)) + ['naive']) + list(earlier)
    rows = []
    print('| backend | L | dtype | fwd ms | fwd roofline ms | fwd+bwd ms | fwd+bwd roofline ms '
          '| peak MiB (above inputs) |' + (' fwd+bwd GPU ms |' if a.profile else ''))
    print('|---|---|---|---|---|---|---|---|' + ('---|' if a.profile else ''))
    for L in a.lengths:
        for dname in a.dtypes:
            dtype = DTYPES[dname]
            inputs = make_inputs(a.batch, a.dim, a.N, L, dtype, device)
            for backend in backends:
                if backend == 'naive' and (L > a.naive_max_length
                                           or dname not in a.naive_dtypes):
                    continue
                reps = a.reps if backend != 'naive' else (a.reps or 2)
                try:
                    t_fwd, t_fb, peak, above, *gpu = run_case(backend, inputs, device, reps,
                                                              earlier, a.profile)
                except Exception as exc:
                    print(f'| {backend} | {L} | {dname} | failed: {type(exc).__name__}: '
                          f'{str(exc)[:200]} |||||' + ('|' if a.profile else ''), flush=True)
                    continue
                rf = rb = None
                if bw:
                    rf = roofline_bytes(a.batch, a.dim, a.N, L, dtype, False) / bw * 1e3
                    rb = roofline_bytes(a.batch, a.dim, a.N, L, dtype, True) / bw * 1e3
                mem = (f'{peak / 2**20:.0f} ({above / 2**20:.0f})' if peak is not None
                       else 'n/a')
                fmt = (lambda x: f'{x:.3f}' if x is not None else 'n/a')
                print(f'| {backend} | {L} | {dname} | {t_fwd:.3f} | {fmt(rf)} | {t_fb:.3f} | '
                      f'{fmt(rb)} | {mem} |' + (f' {fmt(gpu[0])} |' if gpu else ''), flush=True)
                rows.append(dict(backend=backend, L=L, dtype=dname, fwd_ms=t_fwd,
                                 fwd_roofline_ms=rf, fwd_bwd_ms=t_fb, fwd_bwd_roofline_ms=rb,
                                 peak_bytes=peak, peak_above_inputs_bytes=above,
                                 fwd_bwd_gpu_ms=gpu[0] if gpu else None))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(dict(header=header(device), bandwidth=bw, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
