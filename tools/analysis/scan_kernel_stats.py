#!/usr/bin/env python
"""What the compiler makes of the selective scan's Triton kernels, without a GPU.

Each kernel that an eager forward+backward launches (captured from our launchers on CPU
tensors, none run) is compiled for an NVIDIA architecture with Triton's CUDA backend, and
its cubin is read with the ptxas and nvdisasm that Triton bundles: registers per thread,
spilled bytes, and the number of SASS instructions. Registers bound how many programs an
SM holds; spills and a sudden jump in instructions (a loop duplicated or unrolled) show a
code change that a GPU timing would otherwise be needed to see.

    python tools/analysis/scan_kernel_stats.py                        # today's kernels
    python tools/analysis/scan_kernel_stats.py --triton-at ddbbb5e    # beside a revision's
    python tools/analysis/scan_kernel_stats.py --lengths 197 4000 --arch 90 --dtypes fp32 bf16

Figures depend on the Triton version (its compiler and bundled ptxas); the header prints
it. Shapes default to Vim-S's (batch 2, dim 768, N 16), with softplus, z, D, delta_bias.
``--triton-at`` needs a revision whose ``_launch_fwd`` / ``_launch_bwd`` take today's
arguments (every revision since the Triton backward existed does).
"""
import argparse
import os.path as osp
import re
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_scan import (DTYPES, header, make_inputs, stubbed_launches,  # noqa: E402
                            triton_kernels_at)


def launches(module, inputs):
    """``[(kernel, {param: value}, {option: value})]`` of one eager forward+backward of
    the Triton scan module ``module``, captured, none run."""
    with stubbed_launches(record=True) as seen:
        args = [inputs[k] for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')]
        out, states = module._launch_fwd(*args, True)
        module._launch_bwd(*args, states, out, None, True)
    return seen


def kernel_stats(kernel, values, options, arch):
    """``{registers, spill_bytes, sass_instructions}`` of one launch compiled for sm_<arch>
    as a launch on such a GPU compiles it: Triton's own binding of the arguments, with
    its specialisation of integers (equal to 1, divisible by 16) and pointers."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.compiler import ASTSource
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget('cuda', arch, 32)
    backend = CUDABackend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(values, debug=False, instrumentation_mode='', **options)
    bound, specialization, parsed = binder(**kwargs)
    parsed, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound,
                                                             specialization, parsed)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                              options=parsed.__dict__)
    tools = osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
    ptx = compiled.asm['ptx']
    gpu_name = re.search(r'^\.target\s+(\S+)', ptx, re.M).group(1)   # sm_90a, not sm_90
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin = osp.join(tmp, 'k.ptx'), osp.join(tmp, 'k.cubin')
        with open(ptx_path, 'w') as f:
            f.write(ptx)
        proc = subprocess.run([osp.join(tools, 'ptxas'), '-v', '--gpu-name', gpu_name,
                               ptx_path, '-o', cubin], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f'ptxas failed for {kernel.__name__}: {proc.stderr[-500:]}')
        report = proc.stdout + proc.stderr
        sass = subprocess.run([osp.join(tools, 'nvdisasm'), '-c', cubin], capture_output=True,
                              text=True, check=True).stdout
    registers = re.search(r'Used (\d+) registers', report)
    spills = re.search(r'(\d+) bytes spill stores', report)
    if registers is None or spills is None:
        raise RuntimeError(f'ptxas -v printed no register / spill line for {kernel.__name__} '
                           f'(its output format changed?): {report[-500:]}')
    return dict(registers=int(registers.group(1)), spill_bytes=int(spills.group(1)),
                sass_instructions=len(re.findall(r'^\s*/\*[0-9a-f]{4,}\*/\s+\S.*;', sass,
                                                 re.M)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', type=int, default=90, help='compute capability without the dot')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--dim', type=int, default=768)
    p.add_argument('--N', type=int, default=16)
    p.add_argument('--lengths', type=int, nargs='+', default=[4000])
    p.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=list(DTYPES))
    p.add_argument('--triton-at', nargs='+', default=[], metavar='REV',
                   help='also the kernels of these git revisions')
    a = p.parse_args()
    try:
        from mmmambaout.ops.selective_scan import triton as today
    except ImportError as exc:
        raise SystemExit(f'error: the Triton scan needs triton installed ({exc})')
    modules = {'triton': today,
               **{f'triton@{rev}': triton_kernels_at(rev) for rev in a.triton_at}}
    for line in header(torch.device('cpu'))[:2]:
        print(line)
    print(f'compiled for sm_{a.arch}; batch {a.batch}, dim {a.dim}, N {a.N}')
    print('| kernels | L | dtype | kernel | registers | spilled bytes | SASS instructions |')
    print('|---|---|---|---|---|---|---|')
    for L in a.lengths:
        for dname in a.dtypes:
            inputs = make_inputs(a.batch, a.dim, a.N, L, DTYPES[dname], torch.device('cpu'))
            inputs = {k: v.detach() for k, v in inputs.items()}
            for name, module in modules.items():
                for kernel, values, options in launches(module, inputs):
                    s = kernel_stats(kernel, values, options, a.arch)
                    print(f'| {name} | {L} | {dname} | {kernel.__name__} | {s["registers"]} | '
                          f'{s["spill_bytes"]} | {s["sass_instructions"]} |', flush=True)


if __name__ == '__main__':
    main()
