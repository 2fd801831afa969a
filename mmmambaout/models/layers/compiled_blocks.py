"""Run a sequence of blocks through ``torch.compile``, one compiled function per stage.

Used by MambaOut's ``compile_stages`` (:class:`~mmmambaout.models.backbones.mambaout.
MambaOutStage`) and by ``tools/analysis/benchmark_backbone.py`` for timm's stages: it
knows nothing about the blocks it runs.
"""
import functools
import types
from typing import Optional

import torch

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
# the same compilation without CUDA graphs, for stages that no backward follows
GRAPH_FREE_MODES = {'reduce-overhead': 'default', 'max-autotune': 'max-autotune-no-cudagraphs'}


def _run_blocks(blocks, x):
    for block in blocks:
        x = block(x)
    return x


@functools.lru_cache(maxsize=None)
def compiled_blocks_runner(name: str, mode: str = 'default',
                           memory_budget: Optional[float] = None):
    """``run(blocks, x)`` (``x`` through each of ``blocks`` in turn), ``torch.compile``d
    with ``mode``; one function per ``(name, mode, memory_budget)`` (one per stage).

    ``memory_budget`` (0-1] is AOTAutograd's ``activation_memory_budget`` while the
    function compiles (it is read then, inside the call): below 1 its partitioner saves
    fewer activations for the backward and recomputes cheap ops instead.

    Dynamo keeps compiled graphs, the recompile count (``recompile_limit``, 8) and the
    automatic-dynamic state per code object and code name. Stages differ in width and
    depth, so one shared function (or ``compile()`` on every block: they share
    ``GatedCNNBlock.forward``) pools all their graphs in one cache and runs into that
    limit. Here each name gets a copy of the code object under a name of its own, so each
    stage has its own cache and budget. Shapes follow dynamo's rules (``dynamic=None``):
    dims the caller marks dynamic (``MambaOutStage`` marks H and W) stay symbolic in the
    first graph; others are static at first and become symbolic after a change
    (automatic dynamic). The limit is left as it is: a stage past it keeps its graphs and
    runs eager (fused mixer) for new shapes.

    With ``mode='reduce-overhead'`` this sets inductor's
    ``triton.cudagraph_dynamic_shape_warn_limit`` to None for the process (the one
    torch setting we change, and only once a CUDA-graph runner is asked for): the
    warning fires while graphs are recorded, for the backward too, i.e. outside any
    context this function could hold.
    """
    tag = f'{name}_{mode}'.replace('-', '_')
    if memory_budget is not None:
        tag += f'_budget{round(memory_budget * 1000)}'
    if mode == 'reduce-overhead':
        # one CUDA graph per input size is the intent (detection batches vary in size);
        # inductor's warning past 8 sizes would fire in every COCO run
        from torch._inductor import config as inductor_config
        inductor_config.triton.cudagraph_dynamic_shape_warn_limit = None
    code = _run_blocks.__code__.replace(co_name=f'{_run_blocks.__name__}_{tag}')
    compiled = torch.compile(types.FunctionType(code, _run_blocks.__globals__), mode=mode)
    if memory_budget is None:
        return compiled

    def run(blocks, x):
        with torch._functorch.config.patch(activation_memory_budget=memory_budget):
            return compiled(blocks, x)
    return run
