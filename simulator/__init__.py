"""accelsim's simulator: a cycle-level model of a Bit-Tactical-style sparse training accelerator."""

import os as _os

if _os.environ.get("CI"):  # one BLAS/numba thread under CI, before numpy starts its pools
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"

from .api import check, run  # noqa: E402
from .config import Config, ConfigError, load_config, parse_config  # noqa: E402
from .results import summarize, write_results  # noqa: E402

__all__ = ["Config", "ConfigError", "check", "load_config", "parse_config", "run", "summarize",
           "write_results", "__version__"]
