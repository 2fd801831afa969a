from .checkpoint_hook import AtomicCheckpointHook
from .merged_param_groups import MergedParamGroupsOptimWrapperConstructor, merge_param_groups
from .vim_layer_decay import VimLayerDecayOptimWrapperConstructor

__all__ = ['AtomicCheckpointHook', 'MergedParamGroupsOptimWrapperConstructor', 'merge_param_groups',
           'VimLayerDecayOptimWrapperConstructor']
