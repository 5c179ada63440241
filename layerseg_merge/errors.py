"""How commands report failures: one line naming the file or tensor and what to do, exit code 1.

Bad input never shows a traceback. A bug (an exception we did not anticipate) is
still reported in one line, with its type; set ``LAYERSEG_DEBUG=1`` to see the
traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Iterator

import click


def one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def describe(error: BaseException, action: str) -> str:
    """The message for ``error`` raised while doing ``action`` (e.g. "merge")."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" while writing {error.filename}" if error.filename else ""
        return f"{action} failed: no space left on the device{where}; free some space or choose another output"
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"{action} failed: {error.strerror}:{where}"
    return f"{action} failed: {one_line(error)}"


EXPECTED = (ValueError, OSError, RuntimeError, KeyError)


@contextlib.contextmanager
def reported(action: str, expected: tuple[type[BaseException], ...] = EXPECTED) -> Iterator[None]:
    """Turn exceptions into one-line ``click`` errors (exit 1); Ctrl-C and SIGTERM exit 130 / 143."""
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
        if isinstance(error, expected):
            raise click.ClickException(describe(error, action)) from error
        raise click.ClickException(f"{action} failed: {type(error).__name__}: {one_line(error)} "
                                   "(unexpected; set LAYERSEG_DEBUG=1 for the traceback and report it)") from error


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be read; the message names it and what to do."""
