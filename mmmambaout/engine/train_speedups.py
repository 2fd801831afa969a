"""Training speed-ups that keep the model's math, behind one config key.

Our detection and segmentation configs set ``train_speedups = True``; our tools
(``tools/train.py`` and the benchmark / profiler in ``tools/analysis``) call
:func:`apply_train_speedups` on the config before building anything, and
``--cfg-options train_speedups=False`` gives the stock path for comparison. With the key
on:

* MambaOut blocks run their token mixer as one fused op (Triton on CUDA;
  ``backbone.fused_mixer``); off, the composite PyTorch ops.
* On CUDA with Triton, MambaOut's stages are compiled with AOTAutograd's activation
  memory budget at 0.5 (``compile_memory_budget``): the blocks become a few fused
  kernels that recompute norms, GELU and gating in the backward instead of saving them,
  so the step is faster *and* smaller. In detectors the compiled stages also replay as
  CUDA graphs (``backbone.compile_stages='reduce-overhead'``; one graph per stage,
  direction and input size): Mask R-CNN MambaOut-T on an H100 0.079 s/iter against
  0.093 compiled without graphs and 0.198 for stock Swin-T, 3.51 GiB reserved against
  4.42; with 20 input sizes in turn 0.079 against 0.094, and less memory. In mmseg's
  ``EncoderDecoder`` they are compiled without graphs (``compile_stages=True``): there
  the graphs were faster too (UperNet 0.059 s/iter against Swin-T's 0.130) but reserved
  as much memory as Swin-T (3.50 GiB against 3.48), plain compilation 14% less
  (docs/training_speed.md). Nor with gradient accumulation
  (``optim_wrapper.accumulative_counts > 1``): a graph's replay overwrites the gradients
  of its previous replay, which accumulation would still hold. Nor under a distributed
  launcher (``--launcher pytorch/slurm/mpi``) until a multi-GPU run here verifies the
  graphs with DDP, which has open issues with CUDA graph trees (pytorch#140395,
  pytorch#113809); the stages are still compiled there. Not on the CPU (no
  speed-up there, and no compile time for a smoke test), not with ``with_cp``, and not
  where the config sets ``compile_stages`` itself.
* ``MaxIoUAssigner`` / ``RandomSampler`` become ``SyncFreeMaxIoUAssigner`` /
  ``SyncFreeRandomSampler``: identical assignments and, on the CPU with the same seed,
  identical samples, without most of the host-device synchronisations.
* ``AnchorGenerator`` becomes ``CachedAnchorGenerator``: grid anchors computed once per
  feature-map size instead of on every call (each rebuild synchronises once per level).
* ``FCNMaskHead`` becomes ``OnDeviceTargetFCNMaskHead``: the same mask targets, computed
  without the four host-device round trips of mmdet's ``mask_target``.
* ``RPNHead`` becomes ``BatchedRPNHead``: its convolutions run once over all levels
  packed on one canvas, the anchor targets of all images are assigned at once (bitwise
  mmdet's), one loss call over all levels and images instead of one per level, and
  proposal selection for all images at once; outputs, losses and gradients agree with
  mmdet's to float rounding (sums run in another order).
* ``SingleRoIExtractor`` becomes ``LevelSortedRoIExtractor``: RoIs pooled level by level
  from one stable sort, one host read-back per call instead of one per pyramid level;
  same values and gradients.
* ``DetDataPreprocessor`` becomes ``LazyMaskPadDetDataPreprocessor``: bitmap gt masks
  are padded to the batch shape when read, and by that mask head on the device, instead
  of by NumPy on the host every step.
* On CUDA, Adam / AdamW / SGD use PyTorch's fused (multi-tensor, single-kernel) step,
  which also lets the AMP loss scaler skip its host-side inf check.
* The optimizer gets one param group per distinct setting instead of one per parameter
  (``MergedParamGroupsOptimWrapperConstructor`` around the configured constructor), so
  that fused step is one step, not ~200. Checkpoints written with per-parameter groups
  still resume (their optimizer state is mapped onto the merged groups); merged ones need
  the key on to resume.

A config without the key (mmdet's or mmseg's own) is left unchanged.
"""
import torch

from mmmambaout.utils.cli import config_dicts

KEY = 'train_speedups'
SWAPPED_TYPES = {
    'MaxIoUAssigner': 'SyncFreeMaxIoUAssigner',
    'RandomSampler': 'SyncFreeRandomSampler',
    'FCNMaskHead': 'OnDeviceTargetFCNMaskHead',
    'AnchorGenerator': 'CachedAnchorGenerator',
    'DetDataPreprocessor': 'LazyMaskPadDetDataPreprocessor',
    'RPNHead': 'BatchedRPNHead',
    'SingleRoIExtractor': 'LevelSortedRoIExtractor',
}
FUSED_OPTIMIZERS = ('Adam', 'AdamW', 'SGD')
MERGED_CONSTRUCTOR = 'MergedParamGroupsOptimWrapperConstructor'
# compile_stages per top-level model type, default CUDA graphs (see the docstring); not
# mambaout.COMPILE_MODES, which lists torch.compile's modes
COMPILE_STAGES_BY_MODEL = {'EncoderDecoder': True}
DEFAULT_COMPILE_MODE = 'reduce-overhead'
COMPILE_MEMORY_BUDGET = 0.5


def compile_available() -> bool:
    """Whether inductor can compile for the GPU here: CUDA and Triton."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def apply_train_speedups(cfg) -> list:
    """Apply (or explicitly switch off) the speed-ups per ``cfg.train_speedups``;
    return a list of human-readable changes."""
    if KEY not in cfg:
        return []
    enabled = cfg[KEY]
    if not isinstance(enabled, bool):
        raise TypeError(f'{KEY} must be True or False, got {enabled!r}')
    changes = []
    compile_stages = enabled and compile_available()
    compile_mode = COMPILE_STAGES_BY_MODEL.get(cfg.get('model', {}).get('type'),
                                               DEFAULT_COMPILE_MODE)
    if cfg.get('optim_wrapper', {}).get('accumulative_counts', 1) > 1:
        # a CUDA graph's next replay overwrites the gradients it returned, which
        # accumulating .grads would still hold (torch raises on the next access)
        compile_mode = True
    if cfg.get('launcher', 'none') != 'none':
        # not yet run under DDP here, which has open issues with CUDA graph trees
        compile_mode = True
    for node in config_dicts(cfg.get('model', {})):
        if node.get('type') == 'MambaOut':
            node['fused_mixer'] = enabled
            changes.append(f'MambaOut fused_mixer={enabled}')
            if compile_stages and 'compile_stages' not in node and not node.get('with_cp'):
                node['compile_stages'] = compile_mode
                node.setdefault('compile_memory_budget', COMPILE_MEMORY_BUDGET)
                changes.append(f'MambaOut compile_stages={compile_mode!r}, compile_memory_budget='
                               f'{node["compile_memory_budget"]} (the first iterations '
                               f'compile; model.backbone.compile_stages=False to skip)')
        elif enabled and node.get('type') in SWAPPED_TYPES:
            old = node['type']
            node['type'] = SWAPPED_TYPES[old]
            changes.append(f'{old} -> {node["type"]}')
    optim_wrapper = cfg.get('optim_wrapper', {})
    optimizer = optim_wrapper.get('optimizer', {})
    if (enabled and torch.cuda.is_available() and optimizer.get('type') in FUSED_OPTIMIZERS
            and 'fused' not in optimizer and 'foreach' not in optimizer):
        optimizer['fused'] = True
        changes.append(f'{optimizer["type"]} fused=True')
    inner = optim_wrapper.get('constructor')
    if enabled and optimizer and inner != MERGED_CONSTRUCTOR:
        optim_wrapper['constructor'] = MERGED_CONSTRUCTOR
        if inner is not None:
            optim_wrapper['inner_constructor'] = inner
        changes.append(f'param groups merged ({inner or "DefaultOptimWrapperConstructor"})')
    return sorted(set(changes))
