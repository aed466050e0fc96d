"""The model server's old import path: it lives in `mentorgym.model_server` now."""

from mentorgym.model_server import *  # noqa: F403
from mentorgym.model_server import __all__  # noqa: F401
