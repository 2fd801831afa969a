from .checkpoint_hook import AtomicCheckpointHook
from .compile_hook import MambaOutCompileHook
from .merged_param_groups import MergedParamGroupsOptimWrapperConstructor, merge_param_groups
from .preemption_hook import PreemptionCheckpointHook
from .runner import LogFileConfigRunner
from .vim_layer_decay import VimLayerDecayOptimWrapperConstructor

__all__ = ['AtomicCheckpointHook', 'MambaOutCompileHook',
           'MergedParamGroupsOptimWrapperConstructor', 'merge_param_groups',
           'VimLayerDecayOptimWrapperConstructor', 'PreemptionCheckpointHook',
           'LogFileConfigRunner']
