"""accelsim's simulator: a cycle-level model of a Bit-Tactical-style sparse training accelerator."""

__version__ = "0.1.0"

from .api import check, run  # noqa: E402
from .config import Config, ConfigError, load_config, parse_config  # noqa: E402
from .results import summarize, write_results  # noqa: E402

__all__ = ["Config", "ConfigError", "check", "load_config", "parse_config", "run", "summarize",
           "write_results", "__version__"]
