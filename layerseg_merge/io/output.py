"""Safe outputs: refuse dangerous targets, stage beside the target, replace atomically, lock.

Every command that writes a model directory or a checkpoint file goes through
:class:`StagedOutput`:

* the target may not be, contain or lie inside an input (and may not be or contain
  the current directory or the recipe's folder);
* ``overwrite`` replaces only an empty folder or a previous model output, never
  anything else;
* the result is written to a staging path beside the target (same file system)
  and moved into place in one step: a directory is swapped in with Linux's
  ``renameat2(RENAME_EXCHANGE)`` (two renames where that is not available, with
  recovery on the next run), a file with ``os.replace``; at every instant the
  target holds the complete old or the complete new result;
* a lock beside the target refuses a second writer; staging is removed on errors,
  SIGINT and SIGTERM, and stale staging left by a killed process is removed (with a
  message) by the next run; new folders follow the umask;
* a process forked while an output is written (a DataLoader worker) is a helper: it
  holds no lock (a killed writer's lock is free at once, whatever its workers do) and
  leaves Ctrl-C to the writer.

Written here rather than taken from a library: atomic *directory* replacement and
the refusal rules are not offered by the standard library or by mergekit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# What a model directory written by mergekit / layerseg merge may hold.
MODEL_OUTPUT_FILES = re.compile(
    r"config\.json|preprocessor_config\.json|generation_config\.json|README\.md|mergekit_config\.yml"
    r"|model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json"
    r"|pytorch_model(-\d{5}-of-\d{5})?\.bin|pytorch_model\.bin\.index\.json|coefficients\.png"
)
WEIGHT_FILES = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors|pytorch_model(-\d{5}-of-\d{5})?\.bin")


class OutputError(Exception):
    """An output path that cannot be written safely; the message names it and what to do."""


def _overwrite() -> str:
    from layerseg_merge.io.errors import option

    return option("--overwrite", "overwrite=True")


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that ``finally`` blocks clean up."""


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def _related(a: Path, b: Path) -> str | None:
    """How ``a`` relates to ``b``: 'is', 'contains', 'lies inside' or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


def _linked_files(folder: Path) -> Iterator[Path]:
    """The symbolic links among an input folder's files (and those of its subfolders)."""
    if not folder.is_dir():
        return
    for root, folders, files in os.walk(folder):
        for name in files + folders:
            if os.path.islink(os.path.join(root, name)):
                yield Path(root) / name


STAGING_SUFFIX = 48  # what ".NAME.partial-PID-XXXXXXXX.tag" adds to the output's name, at most
_STAGING = re.compile(r"\.(.+)\.partial-\d+-[0-9a-f]{8}")  # the staging names of StagedOutput, write_file_atomically


def staged_name(name: str) -> str | None:
    """The output's name that the staging name ``name`` is written for (None: not a staging name)."""
    match = _STAGING.fullmatch(name)
    return match[1] if match else None


def _check_name_length(target: Path) -> None:
    """An output name the file system can hold together with the staging name made from it."""
    parent = target.parent if target.parent.exists() else Path(".")
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    length = len(os.fsencode(target.name))
    if length + STAGING_SUFFIX > limit:
        raise OutputError(f"output name {target.name[:40]}... is {length} bytes long; this file system allows "
                          f"{limit} per name and the staging copy beside it needs {STAGING_SUFFIX} more: choose a "
                          f"name of at most {limit - STAGING_SUFFIX} bytes")


def check_target(target: Path, inputs: Iterable[str | Path] = (), recipe: str | Path | None = None) -> None:
    """Refuse a target that is, contains or lies inside an input, or that is/contains cwd or the recipe's folder."""
    if target.is_symlink():
        raise OutputError(f"{target} is a symbolic link; give the real path of the output instead")
    out = _resolved(target)
    guarded = [(Path.cwd(), "the current directory")]
    if recipe is not None:
        guarded.append((Path(recipe).resolve().parent, f"the folder of the recipe {recipe}"))
    for place, what in guarded:  # "is the current directory" first: the plainest reason when it holds
        relation = _related(out, _resolved(place))
        if relation in ("is", "contains"):
            raise OutputError(f"output {target} {relation} {what}; choose a new folder for the output")
    for item in inputs:
        relation = _related(out, _resolved(item))
        if relation:
            raise OutputError(f"output {target} {relation} the input {item}; choose an output outside every input")
        for file in _linked_files(Path(item)):
            if _related(_resolved(file), out) in ("is", "lies inside"):
                raise OutputError(f"the input file {file} is a link into the output {target}: replacing the output "
                                  "would change that input; choose another output, or copy the file into the input")
    if os.path.basename(os.path.normpath(str(target))) != target.name or target.name in ("", ".", ".."):
        raise OutputError(f"output {target} ends in '.' or '..' (it means {_resolved(target)}); write the output "
                          "folder's own path")
    _check_name_length(target)


def is_model_output(path: Path) -> bool:
    """A directory that holds a previous model output: config.json + weights and nothing unexpected."""
    names = [entry.name for entry in os.scandir(path)]
    return (
        "config.json" in names
        and any(WEIGHT_FILES.fullmatch(n) for n in names)
        and all(MODEL_OUTPUT_FILES.fullmatch(n) and (path / n).is_file() for n in names)
    )


def _is_checkpoint_file(path: Path) -> bool:
    return path.is_file() and path.suffix in (".pth", ".pt", ".ckpt", ".safetensors")


def check_replaceable(target: Path, overwrite: bool, kind: str,
                      replaceable: Callable[[Path], bool] = is_model_output) -> None:
    """Refuse to replace anything but an empty folder or a previous output (``replaceable``)."""
    if not os.path.lexists(target):
        return
    if kind == "dir":
        if not target.is_dir():
            raise OutputError(f"{target} exists and is not a folder; choose another output path")
        if os.path.ismount(target):
            raise OutputError(f"{target} is a mount point and cannot be replaced; write into a folder inside it")
        if not any(os.scandir(target)):
            return
        if not overwrite:
            raise OutputError(f"{target} is not empty; pass {_overwrite()} to replace a previous model output there")
        if not replaceable(target):
            if replaceable is not is_model_output:
                raise OutputError(f"{target} holds files this command did not write; choose another output or "
                                  "empty it yourself")
            extra = sorted(n for n in os.listdir(target) if not MODEL_OUTPUT_FILES.fullmatch(n))
            what = f"holds {extra[0]!r}, which" if extra else "lacks config.json or weights, so it"
            raise OutputError(f"{target} {what} is not part of a model output; {_overwrite()} replaces only a "
                              "previous model output; choose another output or empty it yourself")
        if not os.access(target, os.W_OK | os.X_OK):
            raise OutputError(f"{target} cannot be replaced (no write permission on it); choose another output")
        return
    if target.is_dir():
        raise OutputError(f"{target} is a folder; give a file path for the output")
    if not overwrite:
        raise OutputError(f"{target} exists; pass {_overwrite()} to replace it")
    if not _is_checkpoint_file(target):
        raise OutputError(f"{target} is not a checkpoint file; {_overwrite()} replaces only a previous output")


_LIBC = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return False
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Turn SIGTERM into :class:`Interrupted` (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum, frame):
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_HELD_LOCKS: set[int] = set()  # the lock descriptors of the outputs this process is writing


def _forked_helper() -> None:
    """In a child forked while outputs are written (a DataLoader worker): drop the inherited lock descriptors,
    so that the lock lives and dies with the writer alone (killed, its lock is free at once; closing a copy
    leaves the writer's lock held), and leave Ctrl-C to the writer, which stops its helpers (a helper
    interrupted while it started printed a traceback, or ran the writer's handlers); SIGTERM gets its default
    back instead of the writer's cleanup handler."""
    if not _HELD_LOCKS:
        return
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_forked_helper)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    """``fd`` is still the file at ``path`` (not removed or replaced meanwhile)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class StagedOutput:
    """Write ``target`` (a folder or a file) through a staging path and move it into place atomically.

    Use as a context manager; write into :attr:`staging`, then call :meth:`commit`.
    ``replaceable`` says which existing folder ``overwrite`` may replace (a previous output).
    Leaving the block without committing (an error, Ctrl-C, SIGTERM) removes the staging.
    ``log`` receives one-line notices (stale staging removed, a rename recovered).
    """

    def __init__(self, target: str | Path, kind: str = "dir", overwrite: bool = False,
                 inputs: Iterable[str | Path] = (), recipe: str | Path | None = None,
                 log: Callable[[str], None] = lambda message: None,
                 replaceable: Callable[[Path], bool] = is_model_output):
        self.target = Path(target)
        self.replaceable = replaceable
        self.kind, self.overwrite, self.log = kind, overwrite, log
        self.inputs, self.recipe = list(inputs), recipe
        self.staging: Path = self.target  # set on entry
        self._lock_fd: int | None = None
        self._owner = os.getpid()
        self._created_parents: list[Path] = []
        self._committed = False
        self._workdirs: list[Path] = []
        self._signals = _terminate_as_exception()

    # -- names beside the target --------------------------------------------------------------
    def _sibling(self, tag: str) -> Path:
        return self.target.parent / f".{self.target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"

    def _siblings(self, tag: str) -> list[Path]:
        pattern = re.compile(rf"\.{re.escape(self.target.name)}\.{tag}-\d+-[0-9a-f]{{8}}(\.\w+)?")
        with contextlib.suppress(FileNotFoundError):
            return sorted(self.target.parent / n for n in os.listdir(self.target.parent) if pattern.fullmatch(n))
        return []

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> StagedOutput:
        check_target(self.target, self.inputs, self.recipe)
        self._make_parents()
        try:
            self._lock()
            self._recover()
            check_replaceable(self.target, self.overwrite, self.kind, self.replaceable)
            self.staging = self._sibling("partial")
            if self.kind == "dir":
                os.mkdir(self.staging, 0o777)  # the umask applies, as for mergekit-yaml's output
            self._signals.__enter__()
        except BaseException:
            self._release()
            raise
        return self

    def workdir(self, tag: str = "work") -> Path:
        """A scratch folder beside the target, removed on exit (e.g. a merge that is then exported to a file)."""
        folder = self.staging.with_name(f"{self.staging.name}.{tag}")
        os.mkdir(folder, 0o777)
        self._workdirs.append(folder)
        return folder

    def __exit__(self, kind, error, traceback) -> None:
        if os.getpid() != self._owner:  # a forked child leaving the writer's block: nothing here is its own
            return
        try:
            for folder in self._workdirs:
                _remove(folder)
            if not self._committed:
                _remove(self.staging)
        finally:
            self._signals.__exit__(None, None, None)
            self._release()

    def _make_parents(self) -> None:
        missing = [p for p in reversed(self.target.parents) if not p.exists()]
        for parent in missing:
            try:
                parent.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                self._remove_created_parents()
                raise OutputError(f"cannot create the folder {parent} ({error.strerror}); "
                                  "choose an output in a writable place") from error
            self._created_parents.append(parent)
        if not self.target.parent.is_dir():
            raise OutputError(f"{self.target.parent} is not a folder; choose another output path")
        if not os.access(self.target.parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write in {self.target.parent} (permission denied); "
                              "choose an output in a writable place")

    def _remove_created_parents(self) -> None:
        for parent in reversed(self._created_parents):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if still empty
        self._created_parents = []

    def _lock(self) -> None:
        lock = self.target.parent / f".{self.target.name}.lock"
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise OutputError(f"cannot write in {self.target.parent} ({error.strerror}); "
                                  "choose an output in a writable place") from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if holder.isdigit() and not _is_running(int(holder)) and _same_file(fd, lock):
                    # The writer died; a process it passed the lock's descriptor to still holds the lock.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)
                    os.close(fd)
                    self.log(f"removed the lock of process {holder}, which no longer runs")
                    continue
                os.close(fd)
                raise OutputError(f"{self.target} is being written by another process (pid {holder}); "
                                  "wait for it to finish or choose another output") from None
            if _same_file(fd, lock):  # else the previous holder removed the file between our open and lock: retry
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                self._lock_fd, self._lock_path = fd, lock
                _HELD_LOCKS.add(fd)
                return
            os.close(fd)

    def _release(self) -> None:
        if self._lock_fd is not None:
            _HELD_LOCKS.discard(self._lock_fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None
        if not self._committed:
            self._remove_created_parents()

    def _recover(self) -> None:
        """With the lock held, whatever staging exists is stale: restore or remove it."""
        old = self._siblings("old")
        if old and not os.path.lexists(self.target):
            os.rename(old[-1], self.target)
            self.log(f"restored {self.target} from {old[-1].name}, left by an interrupted replacement")
            old = old[:-1]
        for stale in [*old, *self._siblings("partial")]:
            _remove(stale)
            self.log(f"removed {stale}, left behind by an interrupted run")

    def _follow_umask(self) -> None:
        """Files some writers create 0600 (mergekit's shards): give them the umask's permissions."""
        mask = os.umask(0)
        os.umask(mask)
        paths = [self.staging] if self.kind == "file" else [p for p in self.staging.rglob("*") if p.is_file()]
        for path in paths:
            if not path.is_symlink():
                path.chmod(0o666 & ~mask)

    def commit(self) -> None:
        """Move the staging into place: the target now holds the new result, complete."""
        self._follow_umask()
        if self.kind == "file" or not os.path.lexists(self.target) or not any(os.scandir(self.target)):
            os.replace(self.staging, self.target)  # atomic; replaces a file or an empty folder
        elif _exchange(self.staging, self.target):
            _remove(self.staging)  # now holds the old output
        else:
            old = self._sibling("old")
            os.rename(self.target, old)  # a kill here is repaired by _recover on the next run
            os.rename(self.staging, self.target)
            _remove(old)
        self._committed = True


def write_file_atomically(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def check_writable_file(path: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """Fail now, not after an hour of work, if ``path`` cannot be written (or would overwrite an input)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file path")
    for item in inputs:
        if _related(_resolved(path), _resolved(item)):
            raise OutputError(f"{path} would be written inside the input {item}; choose another path")
    existing = next(p for p in (path.parent.absolute(), *path.parent.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{existing} is not a folder; choose another path for {path.name}")
    probe = existing / f".{path.name}.probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
    except OSError as error:
        raise OutputError(f"cannot write {path} ({error.strerror} in {existing}); choose a writable place") \
            from error
    probe.unlink()
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {path} (permission denied); choose a writable place")
