
from .mambaout_head import MambaOutClsHead  # noqa: F401
