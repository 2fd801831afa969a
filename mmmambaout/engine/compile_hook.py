"""Compile MambaOut's stages when training starts on a GPU: the config names the hook,
the hook decides what the device allows.

Whether compilation pays depends on where the run lands (inductor needs CUDA and
Triton; on a CPU a smoke test would only wait for the compiler) and on how it trains
(CUDA graphs replay into the same gradient buffers, so gradient accumulation, which
still holds the previous step's gradients, cannot use them). A config cannot know either,
so it names this hook, and the hook chooses in ``before_train``:

* no CUDA or no Triton: nothing changes (eager stages, fused mixer where available);
* a backbone whose ``compile_stages`` the config set (True, False or a mode), or that
  checkpoints blocks (``with_cp``): left as configured;
* otherwise :meth:`MambaOut.compile_blocks` with ``'reduce-overhead'`` (CUDA graphs in
  training steps) when ``cuda_graphs`` is on, the optimizer wrapper accumulates no
  gradients and the model is unwrapped or in PyTorch's DistributedDataParallel
  (``tools/dist_train.sh``, slurm; two GPUs trained so, docs/benchmarks.md); else ``True``
  (compiled, no graphs: gradient accumulation, and wrappers whose graphs under replay
  nobody checked: FSDP, DeepSpeed, ColossalAI, mmengine's separate DDP).

Only training steps run compiled: validation inside training, testing and inference run
the stages eagerly (see ``MambaOutStage``). Each stage compiles one graph with symbolic
H and W. Inductor keeps what it compiled in its cache (the Triton kernels it compiles in
its ``triton/`` subfolder), so a later run of the same config skips most of the
compilation. Its own default, ``/tmp/torchinductor_$USER``, is gone after a reboot and,
on a cluster, on every other node; so unless ``$TORCHINDUCTOR_CACHE_DIR`` is set, the
hook points it at ``~/.cache/mmmambaout/inductor`` (``$XDG_CACHE_HOME`` if set), and logs
where the cache is. (Where the home folder is a slow or quota-limited network drive,
set the variable to local or scratch storage, or ``cache_dir=None``.)

With graphs, the hook also logs after iteration 20 and each epoch how many CUDA graphs
were recorded and how often inductor ran a compiled graph without one (it says why only
in its ``perf_hints`` log: ``TORCH_LOGS=perf_hints``), so that a run shows whether the
graphs it asked for are there.
Measurements: docs/training_speed.md.
"""
import os
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

GRAPH_MODE = 'reduce-overhead'


def compile_available() -> bool:
    """Whether inductor can compile for the GPU here: CUDA and Triton."""
    import torch
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/mmmambaout/inductor``, by default ``~/.cache/mmmambaout/inductor``:
    the hook's inductor cache where ``$TORCHINDUCTOR_CACHE_DIR`` is unset."""
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'mmmambaout', 'inductor')


def _inductor_default_cache_dir() -> Optional[str]:
    try:   # a private module (torch >= 2.5); some versions fail without a user name
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir as default
        return os.path.abspath(default())
    except Exception:
        return None


def use_cache_dir(cache_dir: Optional[str]) -> None:
    """Point inductor's cache at ``cache_dir`` ('auto': :func:`default_cache_dir`; None:
    inductor's default) unless the user set ``$TORCHINDUCTOR_CACHE_DIR``, which always
    wins. (Inductor writes its default into the variable whenever it looks the folder up,
    which importing mmdet's stack already does: that value counts as unset.) Inductor
    reads the variable each time it caches, so this must precede compiling; it also
    reaches its compile workers and anything the run starts."""
    current = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    if not cache_dir or (current and os.path.abspath(current)
                         != _inductor_default_cache_dir()):
        return
    path = default_cache_dir() if cache_dir == 'auto' else cache_dir
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = os.path.abspath(os.path.expanduser(path))


def inductor_cache_dir() -> str:
    """Where inductor caches compiled graphs and kernels: ``$TORCHINDUCTOR_CACHE_DIR``,
    else its default, without creating the folder (for the log line)."""
    if os.environ.get('TORCHINDUCTOR_CACHE_DIR'):
        return os.environ['TORCHINDUCTOR_CACHE_DIR']
    return _inductor_default_cache_dir() or "inductor's default"


def cuda_graph_stats():
    """``(graphs recorded, graph skips)`` of this process so far: the nodes of inductor's
    CUDA graph tree on the current device (one per compiled graph and input size) and
    inductor's ``cudagraph_skips`` counter. Private torch modules (torch 2.11-2.14): None
    where they differ."""
    import torch
    try:
        from torch._dynamo.utils import counters
        from torch._inductor.cudagraph_trees import get_manager
        # device_index is required in torch 2.11; no graphs without an initialised device
        manager = (get_manager(torch.cuda.current_device(), create_if_none_exists=False)
                   if torch.cuda.is_initialized() else None)
        skips = counters['inductor']['cudagraph_skips']
        nodes = [n for ns in (manager.roots or {}).values() for n in ns] if manager else []
        recorded = 0
        while nodes:
            node = nodes.pop()
            recorded += 1
            nodes += [c for cs in node.children.values() for c in cs]
    except (ImportError, AttributeError, torch.cuda.CudaError):
        return None
    return recorded, skips


def graphs_checked_for(model) -> bool:
    """Whether CUDA graphs were checked under how ``model`` (``runner.model``) is wrapped:
    not at all, or in (a subclass of) PyTorch's DistributedDataParallel."""
    from mmengine.model import MMSeparateDistributedDataParallel
    from torch.nn.parallel import DistributedDataParallel
    return not is_model_wrapper(model) or (
        isinstance(model, DistributedDataParallel)
        # a DDP subclass that wraps each submodule in a DDP of its own instead
        and not isinstance(model, MMSeparateDistributedDataParallel))


def compile_mode(cuda_graphs: bool, accumulative_counts: int, graphs_checked: bool = True):
    """``torch.compile`` mode for the stages: graphs only where they are safe."""
    if cuda_graphs and accumulative_counts == 1 and graphs_checked:
        return GRAPH_MODE
    return True


@HOOKS.register_module()
class MambaOutCompileHook(Hook):
    """Compile the blocks of every MambaOut backbone whose ``compile_stages`` is unset.

    Args:
        cuda_graphs (bool): replay the compiled stages as CUDA graphs in training steps
            where that is safe (see the module docstring). Our detection configs turn it
            on; segmentation configs off (with graphs UperNet reserved as much memory as
            Swin-T).
        memory_budget (float, optional): AOTAutograd's activation memory budget for the
            compiled stages, unless the backbone sets ``compile_memory_budget``.
        cache_dir (str, optional): inductor's cache where ``$TORCHINDUCTOR_CACHE_DIR`` is
            unset: ``'auto'`` (:func:`default_cache_dir`, in the home folder), a folder,
            or None for inductor's default in ``/tmp``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, cuda_graphs: bool = True, memory_budget: Optional[float] = 0.5,
                 cache_dir: Optional[str] = 'auto'):
        self.cuda_graphs = cuda_graphs
        self.memory_budget = memory_budget
        self.cache_dir = cache_dir
        self.graphs = False   # whether a backbone was given graphs (then they are reported)

    def before_train(self, runner) -> None:
        from mmmambaout.models.backbones import MambaOut
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbones = [m for m in model.modules() if isinstance(m, MambaOut)]
        if not backbones:
            return
        if not compile_available():
            runner.logger.info('MambaOutCompileHook: no CUDA or no Triton here, the MambaOut '
                               'stages run eagerly')
            return
        use_cache_dir(self.cache_dir)   # also for stages the config itself compiles
        counts = getattr(runner.optim_wrapper, '_accumulative_counts', 1)
        mode = compile_mode(self.cuda_graphs, counts, graphs_checked_for(runner.model))
        for backbone in backbones:
            if backbone.compile_stages is not None or any(s.with_cp for s in backbone.stages):
                continue
            budget = backbone.compile_memory_budget or self.memory_budget
            backbone.compile_blocks(mode, budget)
            self.graphs |= mode == GRAPH_MODE
            runner.logger.info(
                f'MambaOutCompileHook: MambaOut stages compiled (mode {mode!r}, memory budget '
                f'{budget}); the first iterations compile (cache: {inductor_cache_dir()}). '
                'model.backbone.compile_stages=False keeps them eager')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == 20:
            self._report_graphs(runner, 20)

    def after_train_epoch(self, runner) -> None:
        self._report_graphs(runner, runner.iter)

    def _report_graphs(self, runner, iterations: int) -> None:
        stats = cuda_graph_stats() if self.graphs else None
        if stats is None:
            return
        recorded, skips = stats
        message = (f'MambaOutCompileHook: {recorded} CUDA graphs recorded in {iterations} '
                   f'iterations (each stage and direction, per input size), {skips} runs '
                   'without a graph')
        if skips:
            message += (': inductor declined to record some graphs (TORCH_LOGS=perf_hints '
                        'says why)')
        runner.logger.info(message)
