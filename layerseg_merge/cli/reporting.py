"""How commands report failures: one line naming the file or tensor and what to do, exit code 1.

Bad input never shows a traceback. A bug (an exception we did not anticipate) is
still reported in one line, with its type; set ``LAYERSEG_DEBUG=1`` to see the
traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from layerseg_merge.io.errors import command_line, disk_full, one_line
from layerseg_merge.io.output import Interrupted, OutputError, staged_name


def user_path(path: str | os.PathLike) -> str:
    """``path`` as the user named it: a staging folder or file shown as the output it becomes."""
    return str(Path(*[staged_name(part) or part for part in Path(path).parts]))


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
    try:
        with command_line():
            yield
    except click.ClickException:
        raise
    except KeyboardInterrupt:
        click.echo(f"{action} interrupted; nothing was written", err=True)
        sys.exit(130)
    except BaseException as error:
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


