"""Where sweep points run: in this process, in local worker processes, or on a Dask cluster.

Each executor has one method, `map_unordered(fn, tasks)`, which calls `fn(*args)` for every
task `(key, args)` (plain data in, plain data out) and yields `(task index, result)` as
the tasks finish. An exception raised by a task carries `sweep_task` = its index.

`SerialExecutor` runs the tasks in this process. `ProcessExecutor` runs them in N worker
processes (`concurrent.futures.ProcessPoolExecutor`, spawn context, one BLAS/numba thread
per worker, SIGINT ignored in workers so Ctrl-C is handled once, by the parent, which
terminates the workers). `DaskExecutor` submits them to an existing Dask distributed
scheduler (`client.submit(fn, *args)`; needs the `distributed` extra).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

from .config import ConfigError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
DASK_HINT = "pip install 'accelsim[distributed]'"

Task = tuple[str, tuple]  # (a unique key, the arguments of the function)


class SerialExecutor:
    """Runs the points one after another in this process."""

    def map_unordered(self, fn: Callable, tasks: list[Task]) -> Iterator[tuple[int, Any]]:
        for i, (_, args) in enumerate(tasks):
            try:
                result = fn(*args)
            except Exception as e:
                e.sweep_task = i
                raise
            yield i, result


def _init_worker(threads: int) -> None:
    import threading

    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    # tqdm's default lock is a multiprocessing semaphore, which a terminated worker would leak
    # (and the resource tracker warn about); workers draw no bars, a thread lock will do
    tqdm.set_lock(threading.RLock())
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def _thread_environment(threads: int):
    """Child processes inherit the environment when they start: set BLAS/numba threads for
    them (numpy's BLAS reads these only at start-up), and restore ours afterwards."""
    saved = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    os.environ.update({v: str(threads) for v in THREAD_VARIABLES})
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


class ProcessExecutor:
    """Runs the points in `workers` processes (spawn context, `threads` BLAS/numba threads
    each). On Ctrl-C or an error the workers are terminated."""

    def __init__(self, workers: int, threads: int = 1):
        self.workers, self.threads = workers, threads

    def map_unordered(self, fn: Callable, tasks: list[Task]) -> Iterator[tuple[int, Any]]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if not tasks:
            return
        context = multiprocessing.get_context("spawn")
        with _thread_environment(self.threads):  # workers start during submit
            pool = ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=context,
                                       initializer=_init_worker, initargs=(self.threads,))
            futures = {pool.submit(fn, *args): i for i, (_, args) in enumerate(tasks)}
        finished = False
        try:
            for future in as_completed(futures):
                yield futures[future], _result(future, futures[future])
            finished = True
        finally:
            if not finished:
                for future in futures:
                    future.cancel()
                terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
                if terminate is not None:
                    terminate()
                else:
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)  # quick once the workers are gone


def _result(future, task: int) -> Any:
    """`future.result()`; an exception raised by the task gets `sweep_task` = its index."""
    try:
        return future.result()
    except Exception as e:
        e.sweep_task = task
        raise


def check_dask_address(address: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9+]*://\S+", address):
        raise ConfigError(f"--dask-scheduler: expected a scheduler address like "
                          f"tcp://HOST:PORT, got {address!r}")
    return address


class DaskExecutor:
    """Submits the points to the Dask distributed scheduler at `address` (the workers need
    accelsim installed). Needs the `distributed` extra."""

    def __init__(self, address: str, timeout: float = 10.0):
        self.address, self.timeout = check_dask_address(address), timeout
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ConfigError(f"--dask-scheduler: needs dask.distributed, which is not installed; "
                              f"{DASK_HINT}") from None
        self.client = None

    def connect(self) -> None:
        """Connect to the scheduler now (else the first `map_unordered` does)."""
        from distributed import Client

        if self.client is None:
            try:
                self.client = Client(self.address, timeout=self.timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError(f"--dask-scheduler: cannot connect to {self.address} "
                                  f"({' '.join(str(e).split()) or type(e).__name__})") from None

    def map_unordered(self, fn: Callable, tasks: list[Task]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        if not tasks:
            return
        self.connect()
        client, self.client = self.client, None
        futures = []
        finished = False
        try:
            futures = [client.submit(fn, *args, key=f"accelsim-point-{key}", pure=False)
                       for key, args in tasks]
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures, loop=client.loop):
                yield index[future.key], _result(future, index[future.key])
            finished = True
        finally:
            if not finished and futures:
                with contextlib.suppress(Exception):
                    client.cancel(futures)
            client.close()
