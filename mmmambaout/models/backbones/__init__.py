
from .mambaout import MambaOut  # noqa: F401
from .vim import Vim  # noqa: F401
