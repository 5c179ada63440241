"""How commands report failures: one line naming the file or tensor and what to do, exit code 1.

Bad input never shows a traceback. A bug (an exception we did not anticipate) is
still reported in one line, with its type; set ``LAYERSEG_DEBUG=1`` to see the
traceback.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click

_IN_COMMAND = contextvars.ContextVar("layerseg_command", default=False)  # set while a `layerseg` command runs


def one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def option(flag: str, argument: str) -> str:
    """An option as the user gave it, for messages: ``flag`` (``--overwrite``) while a ``layerseg`` command runs,
    ``argument`` (``overwrite=True``) when the Python API was called."""
    return flag if _IN_COMMAND.get() else argument


def user_path(path: str | os.PathLike) -> str:
    """``path`` as the user named it: a staging folder or file shown as the output it becomes."""
    from layerseg_merge.output import staged_name

    return str(Path(*[staged_name(part) or part for part in Path(path).parts]))


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


def _command_output() -> str | None:
    """The OUT of the running command (merge, import, eval --out ...): what a full disk stopped it writing."""
    context = click.get_current_context(silent=True)
    out = context.params.get("out") if context is not None else None
    return str(out) if out else None


def describe(error: BaseException, action: str, output: str | None = None) -> str:
    """The message for ``error`` raised while doing ``action`` (e.g. "merge"); ``output``: what it was writing."""
    if disk_full(error):
        filename = getattr(error, "filename", None) or output
        where = f" while writing {user_path(filename)}" if filename else ""
        return f"{action} failed: no space left on the device{where}; free some space or choose another output"
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"{action} failed: {error.strerror}:{where}"
    return f"{action} failed: {one_line(error)}"


EXPECTED = (ValueError, OSError, RuntimeError, KeyError)


@contextlib.contextmanager
def reported(action: str, expected: tuple[type[BaseException], ...] = EXPECTED) -> Iterator[None]:
    """Turn exceptions into one-line ``click`` errors (exit 1); Ctrl-C and SIGTERM exit 130 / 143. Messages
    inside name options as command-line flags (:func:`option`)."""
    command = _IN_COMMAND.set(True)
    try:
        yield
    except click.ClickException:
        raise
    except KeyboardInterrupt:
        click.echo(f"{action} interrupted; nothing was written", err=True)
        sys.exit(130)
    except BaseException as error:
        from layerseg_merge.output import Interrupted, OutputError

        if isinstance(error, Interrupted):
            click.echo(f"{action} terminated; nothing was written", err=True)
            sys.exit(128 + signal.SIGTERM)
        if isinstance(error, SystemExit | GeneratorExit):
            raise
        if os.environ.get("LAYERSEG_DEBUG"):
            raise
        if isinstance(error, OutputError):
            raise click.ClickException(one_line(error)) from error
        if disk_full(error):  # also from libraries that do not raise OSError (safetensors)
            raise click.ClickException(describe(error, action, _command_output())) from error
        if isinstance(error, expected):
            raise click.ClickException(describe(error, action)) from error
        raise click.ClickException(f"{action} failed: {type(error).__name__}: {one_line(error)} "
                                   "(unexpected; set LAYERSEG_DEBUG=1 for the traceback and report it)") from error
    finally:
        _IN_COMMAND.reset(command)


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be read; the message names it and what to do."""
