"""Memory the machine can give a run, and the refusal of runs that would not fit.

Commands estimate their peak memory (bytes) from the workload before they allocate
anything large and call `check_memory`; a run whose estimate exceeds the limit stops
with one line naming the key to change, instead of being killed by the kernel (or
swapping for an hour) after the work has started.

The limit is the least of the machine's available memory (`MemAvailable` of
/proc/meminfo; on other systems the physical memory), the address-space limit
(`ulimit -v`, less what numba and BLAS reserve without touching) and a cgroup v2
`memory.max`, unless the user raises or lowers it with
`--max-memory GIB` or the environment variable ``ACCELSIM_MAX_MEMORY`` (GiB). The
estimates are deliberately simple upper-side models of the largest arrays a command
holds at once; each command's docstring says what its estimate counts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

GIB = 1 << 30
ENVIRONMENT = "ACCELSIM_MAX_MEMORY"


class MemoryLimitError(ValueError):
    """A run that would need more memory than allowed; `str()` is the one-line message."""


def available_memory_bytes() -> int:
    """Memory available to a new process, in bytes (MemAvailable, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return 8 * GIB


VIRTUAL_OVERHEAD = 768 << 20  # address space a run reserves beyond what it touches (numba, BLAS)


def _address_space_limit() -> int | None:
    """Bytes a process may touch under `ulimit -v` (RLIMIT_AS less what it reserves)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on Linux/macOS
        return None
    return None if soft == resource.RLIM_INFINITY else max(soft - VIRTUAL_OVERHEAD, 0)


def _cgroup_limit() -> int | None:
    """Bytes the cgroup (v2) still lets this process use: memory.max - memory.current."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), None)
        if path is None:
            return None
        base = Path("/sys/fs/cgroup") / path.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((base / "memory.current").read_text()), 0)
    except (OSError, ValueError, StopIteration):
        return None


def machine_limit_bytes() -> tuple[int, str]:
    """The least of the available memory, the address-space limit and the cgroup's."""
    limits = [(available_memory_bytes(), "available memory"),
              (_address_space_limit(), "ulimit -v, less 768 MiB of reserved address space"),
              (_cgroup_limit(), "the cgroup's memory.max")]
    return min(((b, why) for b, why in limits if b is not None), key=lambda t: t[0])


def parse_gib(text: str, what: str) -> float:
    """A memory limit in GiB (a finite number > 0) from `text`; MemoryLimitError otherwise."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > 1 << 40:
        raise MemoryLimitError(f"{what}: expected a memory limit in GiB (a number > 0), "
                               f"got {str(text)[:40]!r}")
    return value


def memory_limit_bytes(max_memory_gib: float | None = None) -> tuple[int, str]:
    """The limit in bytes and where it comes from: `max_memory_gib` (from --max-memory),
    else $ACCELSIM_MAX_MEMORY, else the available memory."""
    if max_memory_gib is not None:
        return int(max_memory_gib * GIB), "--max-memory"
    env = os.environ.get(ENVIRONMENT)
    if env:
        return int(parse_gib(env, ENVIRONMENT) * GIB), ENVIRONMENT
    return machine_limit_bytes()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def format_bytes(n: float) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):,.0f} MiB"


def check_memory(estimate_bytes: float, what: str, change: str,
                 max_memory_gib: float | None = None) -> None:
    """Raise MemoryLimitError if `estimate_bytes` exceeds the limit.

    `what` names the run ("configs/x.yaml: resnet50 at image_size 4096, batch 1"),
    `change` the keys or options that lower the estimate ("workload.image_size or
    workload.batch"). The message also says how to raise the limit."""
    limit, source = memory_limit_bytes(max_memory_gib)
    if estimate_bytes > limit:
        raise MemoryLimitError(
            f"{what}: needs about {format_bytes(estimate_bytes)} of memory, more than the "
            f"{format_bytes(limit)} allowed ({source}); lower {change}, or raise the limit "
            f"with --max-memory GIB or {ENVIRONMENT}")
