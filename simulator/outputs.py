"""Files and directories accelsim writes: atomically, only over what it made, checked first.

Rules (README, "Outputs"):
- every file is written to a temporary sibling and renamed into place (`write_atomic`);
  a trace directory is built as a temporary sibling and swapped in (`replace_directory`);
- an existing path is replaced only if it is what we would write there: a regular file
  (never a device, FIFO, directory or symlink), or for a trace directory a directory
  holding manifest.yaml (checked by `simulator.trace.check_trace_destination`);
- output locations are probed before any work (`probe_output_dir`): the directory must
  exist or be creatable, and a file must actually be creatable in it (permissions,
  read-only or pseudo file systems, over-long names), so a long run cannot fail at its end;
- temporary files and directories carry our naming, ``.<name>.accelsim-<pid>-<random>``
  with the suffix ``.tmp`` (being written) or ``.old`` (the replaced trace, until it is
  deleted). A writer killed with SIGKILL leaves them behind; the first write of a later
  process into that directory removes those whose process is gone (`remove_stale`), and
  nothing else.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

TAG = "accelsim"


class OutputError(ValueError):
    """An output location that cannot be used; `str()` is the one-line message."""


NAME_KEPT = 100  # characters of the target's name kept in a temporary name


def _prefix(target: Path) -> str:
    return f".{target.name[:NAME_KEPT]}.{TAG}-{os.getpid()}-"


_STALE = re.compile(rf"^\.(?P<name>.+)\.{TAG}-(?P<pid>\d+)-[A-Za-z0-9_]+\.(?:tmp|old)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


_CLEANED: set[str] = set()  # directories this process has already cleaned


def stale_entries(directory: Path) -> list[Path]:
    """Temporary files/directories of our naming in `directory` left by dead processes."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(directory / n for n in names
                  if (m := _STALE.match(n)) and not _alive(int(m["pid"])))


def remove_stale(target: Path) -> list[Path]:
    """Delete what dead writers left in `target`'s directory (see the module docstring),
    once per directory and process (a sweep writes thousands of files into one). If a
    writer died between the two renames of a directory replacement (only on file systems
    without an atomic exchange) and its target is missing, that `.old` copy is put back."""
    directory = target.parent
    key = os.path.realpath(directory)
    if key in _CLEANED:
        return []
    _CLEANED.add(key)
    stale = stale_entries(directory)
    for p in [p for p in stale if p.name.endswith(".old") and (p / "manifest.yaml").is_file()]:
        name = _STALE.match(p.name)["name"]
        home = (target if name == target.name[:NAME_KEPT]
                else directory / name if len(name) < NAME_KEPT else None)
        if home is not None and not os.path.lexists(home):
            os.replace(p, home)
            stale.remove(p)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_kind(mode: int) -> str:
    """What a file of `st_mode` `mode` is, as the messages say it ("a FIFO", ...)."""
    return ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a regular file" if stat.S_ISREG(mode)
            else "a device or special file")


def check_file_target(path: Path) -> None:
    """OutputError unless `path` is absent or a regular file (not a symlink) we may replace."""
    if not os.path.lexists(path):
        return
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: exists and is {file_kind(st.st_mode)}, not a regular file; refusing to "
                          "replace it (choose another output path)")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same directory and a rename.
    An existing `path` must be a regular file (OutputError otherwise, nothing written)."""
    path = Path(path)
    check_file_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a plain file's mode
        check_file_target(path)  # still ours to replace
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_temp_dir(target: Path) -> Path:
    """An empty directory next to `target`, of our naming, with a plain directory's mode."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    return tmp


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_directory(tmp: Path, target: Path) -> None:
    """Put the complete directory `tmp` at `target`, replacing an existing `target`
    directory (the caller has checked it is ours to replace). On Linux the swap is one
    atomic exchange, so a kill at any moment leaves the old or the new directory; elsewhere
    two renames, and `remove_stale` restores the old one if a writer died between them."""
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old directory
        return
    old = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=target.parent))
    os.replace(target, old)  # onto the empty directory just made
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def nearest_existing(path: str | os.PathLike) -> Path:
    """`path` itself if it exists, else its closest existing ancestor (where it would be made)."""
    path = Path(path)
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_name_length(path: Path, what: str) -> None:
    """OutputError if `path`'s last component is longer than its file system allows."""
    try:
        limit = os.pathconf(nearest_existing(path.parent), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise OutputError(f"{what}: the name {path.name[:40]!r}... is longer than the "
                          f"{limit} bytes a file name may have here")


def probe_output_dir(path: str | os.PathLike, what: str, files: tuple[str, ...] = ()) -> None:
    """Check before any work that `path` can hold our output, leaving nothing behind.

    `path` must be a directory (a symlink to one is fine) or not exist yet; then the
    missing directories are created, a temporary file of our naming is created and removed
    in it, and the directories created are removed again. `files` (e.g. results.csv) must
    each be absent or a regular file. Raises OutputError naming `what` (the option or key)."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        kind = "a broken symlink" if not path.exists() else "not a directory"
        raise OutputError(f"{what}: expected a directory (or a path to create one at), but "
                          f"{str(path)!r} exists and is {kind}")
    made: list[Path] = []
    try:
        missing = []
        p = path
        while not os.path.lexists(p) and p != p.parent:
            missing.append(p)
            p = p.parent
        if not p.is_dir():
            raise OutputError(f"{what}: cannot create {str(path)!r}: {str(p)!r} is not a directory")
        for d in reversed(missing):
            os.mkdir(d)
            made.append(d)
        fd, probe = tempfile.mkstemp(prefix=_prefix(path / "probe"), suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OutputError:
        raise
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = getattr(e, "strerror", None) or str(e)[:80] or e.__class__.__name__
        raise OutputError(f"{what}: cannot write in {str(path)[:120]!r} ({reason})") from None
    finally:
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
    for name in files:
        try:
            check_file_target(path / name)
        except OutputError as e:
            raise OutputError(f"{what}: {e}") from None
