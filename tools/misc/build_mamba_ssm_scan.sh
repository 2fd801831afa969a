#!/usr/bin/env bash
# Build mamba_ssm's selective-scan CUDA kernel where no mamba_ssm wheel fits the PyTorch /
# CUDA installed (e.g. PyTorch 2.11 + CUDA 13), for one GPU architecture, so that
# mmmambaout's 'mamba_ssm' scan backend and tools/analysis/benchmark_scan.py can use it.
#
#   pip download --no-deps --no-binary :all: mamba_ssm==2.3.2.post1 -d sdist/   # online
#   bash tools/misc/build_mamba_ssm_scan.sh sdist/mamba_ssm-2.3.2.post1.tar.gz /tmp/mss 90
#   export PYTHONPATH=/tmp/mss/mamba_ssm-2.3.2.post1:/tmp/mss/ext:$PYTHONPATH
#   python tools/analysis/benchmark_scan.py --backends mamba_ssm triton
#
# Arguments: the source distribution, an output folder, the compute capability without
# the dot (90 = H100 / H200). Only selective_scan_cuda is built (mamba_ssm's setup.py builds
# it and its other kernels for nine architectures), with the nvcc flags of mamba_ssm
# 2.3.2.post1's setup.py; Python imports the package from its unpacked source. Needs nvcc
# and a C++ compiler; 4-5 minutes on 16 cores (MAX_JOBS sets ninja's jobs).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 MAMBA_SSM_SDIST.tar.gz OUT_DIR COMPUTE_CAPABILITY (e.g. 90)" >&2
    exit 2
fi
[ -f "$1" ] || { echo "error: no source distribution at $1" >&2; exit 2; }
SDIST=$(realpath "$1"); OUT=$(realpath -m "$2"); ARCH=$3
case $ARCH in *[!0-9]*|'') echo "error: the compute capability is digits, e.g. 90; got '$ARCH'" >&2; exit 2;; esac
# the archive's top folder (awk reads the whole listing: no SIGPIPE under pipefail)
TOP=$(tar tzf "$SDIST" 2>/dev/null | awk 'NR == 1') || {
    echo "error: $1 is not a .tar.gz source distribution" >&2; exit 2; }
TOP=${TOP%%/*}
mkdir -p "$OUT/ext"
tar xzf "$SDIST" -C "$OUT"
SRC=$OUT/$TOP
[ -f "$SRC/csrc/selective_scan/selective_scan.cpp" ] || {
    echo "error: $1 has no csrc/selective_scan/selective_scan.cpp: not a mamba_ssm sdist?" >&2; exit 2; }
cd "$SRC"
EXT=$OUT/ext ARCH=$ARCH python3 - <<'PY'
import glob, os, time
from torch.utils.cpp_extension import load
start = time.time()
arch = os.environ['ARCH']
load(name='selective_scan_cuda', build_directory=os.environ['EXT'], verbose=False,
     sources=['csrc/selective_scan/selective_scan.cpp']
     + sorted(glob.glob('csrc/selective_scan/*.cu')),
     extra_include_paths=['csrc/selective_scan'],
     extra_cflags=['-O3', '-std=c++17'],
     extra_cuda_cflags=['-O3', '-std=c++17', '-U__CUDA_NO_HALF_OPERATORS__',
                        '-U__CUDA_NO_HALF_CONVERSIONS__', '-U__CUDA_NO_BFLOAT16_OPERATORS__',
                        '-U__CUDA_NO_BFLOAT16_CONVERSIONS__',
                        '-U__CUDA_NO_BFLOAT162_OPERATORS__',
                        '-U__CUDA_NO_BFLOAT162_CONVERSIONS__', '--expt-relaxed-constexpr',
                        '--expt-extended-lambda', '--use_fast_math', '-lineinfo',
                        '-gencode', f'arch=compute_{arch},code=sm_{arch}', '--threads', '4'])
print(f'selective_scan_cuda built in {time.time() - start:.0f} s')
PY
echo "export PYTHONPATH=$SRC:$OUT/ext:\$PYTHONPATH"
