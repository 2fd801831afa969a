from .checkpoint_hook import AtomicCheckpointHook
from .vim_layer_decay import VimLayerDecayOptimWrapperConstructor

__all__ = ['AtomicCheckpointHook', 'VimLayerDecayOptimWrapperConstructor']
