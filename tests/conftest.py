"""Imported by pytest before any test module: `simulator` first, so that under CI one
BLAS/numba thread is set before numpy starts its thread pools (see simulator/__init__.py)."""

import simulator  # noqa: F401
