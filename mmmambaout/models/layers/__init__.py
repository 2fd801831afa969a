"""Building blocks shared by more than one model (or by a model and the tools)."""
from .compiled_blocks import COMPILE_MODES, GRAPH_FREE_MODES, compiled_blocks_runner
from .drop_path import DropPath, drop_path
from .token_ssm import TokenSSM

__all__ = ['COMPILE_MODES', 'GRAPH_FREE_MODES', 'compiled_blocks_runner', 'DropPath',
           'drop_path', 'TokenSSM']
