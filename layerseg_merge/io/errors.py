"""Errors for people: one line naming the file or tensor and what to do (no click: the command line turns them
into its messages in :mod:`layerseg_merge.cli.reporting`)."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
from collections.abc import Iterator

_IN_COMMAND = contextvars.ContextVar("layerseg_command", default=False)  # set while a `layerseg` command runs


def one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def option(flag: str, argument: str) -> str:
    """An option as the user gave it, for messages: ``flag`` (``--overwrite``) while a ``layerseg`` command runs,
    ``argument`` (``overwrite=True``) when the Python API was called."""
    return flag if _IN_COMMAND.get() else argument


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Inside, messages name options as command-line flags (:func:`option`)."""
    token = _IN_COMMAND.set(True)
    try:
        yield
    finally:
        _IN_COMMAND.reset(token)


def disk_full(error: BaseException) -> bool:
    """A full disk: ENOSPC, also as Rust writers (safetensors) word it in their message."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return f"(os error {errno.ENOSPC})" in str(error)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Errors of writing ``path`` that name no file, or a temporary one (a full disk, say), name ``path``."""
    try:
        yield
    except Exception as error:
        if disk_full(error):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
        if isinstance(error, OSError) and error.errno and not error.filename:
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(path)) from error
        raise


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be read; the message names it and what to do."""
