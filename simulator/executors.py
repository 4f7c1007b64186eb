"""Where sweep points run: in this process, in local worker processes, or on a Dask cluster.

Each executor has one method, `map_unordered(fn, tasks)`, which calls `fn(*args)` for every
task `(key, args)` (plain data in, plain data out) and yields `(task index, result)` as
the tasks finish. An exception raised by a task carries `sweep_task` = its index. `tasks`
is a sequence read one task at a time as the task is handed out; only a bounded number
are in flight at once (2 per worker process, `DASK_WINDOW` on a cluster), so a long
sweep never holds every task's arguments.

`SerialExecutor` runs the tasks in this process. `ProcessExecutor` runs them in N worker
processes (`concurrent.futures.ProcessPoolExecutor`, spawn context, one BLAS/numba thread
per worker, SIGINT ignored in workers so Ctrl-C is handled once, by the parent, which
terminates the workers). A worker also exits by itself within `PARENT_POLL` seconds of
its parent's death (even by SIGKILL, which gives the parent no chance to stop it): a
daemon thread compares `os.getppid()` with the parent's pid. `DaskExecutor` submits them
to an existing Dask distributed scheduler (`client.submit(fn, *args)`; needs the
`distributed` extra).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .config import ConfigError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
DASK_HINT = "pip install 'accelsim[distributed]'"

Task = tuple[str, tuple]  # (a unique key, the arguments of the function)
PARENT_POLL = 0.5  # seconds between a worker's checks that its parent is alive
TASKS_PER_WORKER = 2  # tasks handed to the pool per worker process at a time
DASK_WINDOW = 256  # tasks submitted to a Dask scheduler at a time


class SerialExecutor:
    """Runs the points one after another in this process."""

    def map_unordered(self, fn: Callable, tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        for i in range(len(tasks)):
            _, args = tasks[i]
            try:
                result = fn(*args)
            except Exception as e:
                e.sweep_task = i
                raise
            yield i, result


def _init_worker(threads: int, parent: int) -> None:
    """Set up a worker process: exit with the parent (pid `parent`), leave Ctrl-C to the
    parent, no multiprocessing lock for tqdm, `threads` numba threads."""
    from tqdm import tqdm

    _exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    # tqdm's default lock is a multiprocessing semaphore, which a terminated worker would leak
    # (and the resource tracker warn about); workers draw no bars, a thread lock will do
    tqdm.set_lock(threading.RLock())
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass


def _exit_with_parent(parent: int, interval: float = PARENT_POLL) -> None:
    """Exit this process (`os._exit(1)`) once its parent, pid `parent`, is gone: at once if
    it already is, else from a daemon thread polling `os.getppid()` every `interval` s (an
    orphan is re-parented, so its parent pid changes). Without it a worker whose parent was
    killed with SIGKILL would wait for tasks forever."""
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="accelsim-exit-with-parent", daemon=True).start()


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

    def map_unordered(self, fn: Callable, tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        if not len(tasks):
            return
        workers = min(self.workers, len(tasks))
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(self.threads, os.getpid()))
        waiting = iter(range(len(tasks)))
        running: dict = {}  # future -> task index

        def hand_out() -> None:
            """Submit tasks until TASKS_PER_WORKER per worker are in the pool."""
            for i in itertools.islice(waiting, TASKS_PER_WORKER * workers - len(running)):
                running[pool.submit(fn, *tasks[i][1])] = i

        finished = False
        try:
            with _thread_environment(self.threads):  # workers start during the first submits
                hand_out()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    yield i, _result(future, i)
                hand_out()
            finished = True
        finally:
            if not finished:
                for future in running:
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
    """`address` if it is tcp://HOST:PORT (the only transport accelsim configures: tls
    needs certificates, inproc a scheduler in this process); ConfigError otherwise."""
    if not re.fullmatch(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]{1,253}):[0-9]{1,5}", address):
        from .safe_yaml import cut

        raise ConfigError(f"--dask-scheduler: expected a scheduler address tcp://HOST:PORT, "
                          f"got {cut(repr(address))}")
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

    def map_unordered(self, fn: Callable, tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        if not len(tasks):
            return
        self.connect()
        client, self.client = self.client, None
        running: dict = {}  # future key -> (future, task index)

        def submit(i: int):
            key, args = tasks[i]
            future = client.submit(fn, *args, key=f"accelsim-point-{key}", pure=False)
            running[future.key] = (future, i)
            return future

        waiting = iter(range(len(tasks)))
        finished = False
        try:
            done = as_completed([submit(i) for i in itertools.islice(waiting, DASK_WINDOW)],
                                loop=client.loop)
            for future in done:
                _, i = running.pop(future.key)
                yield i, _result(future, i)
                following = next(waiting, None)
                if following is not None:
                    done.add(submit(following))
            finished = True
        finally:
            if not finished and running:
                with contextlib.suppress(Exception):
                    client.cancel([f for f, _ in running.values()])
            client.close()
