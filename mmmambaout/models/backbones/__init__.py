
from .mambaout import MambaOut  # noqa: F401
