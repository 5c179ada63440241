"""One output folder written by every torchrun rank, atomic as every other output (:class:`StagedOutput`).

Rank 0 opens the staging folder beside the target (refusing a target that is, contains or lies inside an
input or the current directory, and anything but a previous output of the same command) and tells the other
ranks where it is; each rank writes its own files into it; once every rank is done, rank 0 moves it into
place in one step. A kill at any point leaves the previous complete output or none. The ranks share a file
system (the same paths on every machine, as for ``sweep``); one process is the case of a single rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from layerseg_merge.io.output import OutputError, StagedOutput


def _distributed(world: int) -> bool:
    if world <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


class SharedFolder:
    """The staging folder every rank writes into; :meth:`commit` (every rank calls it) moves it into place."""

    def __init__(self, staging: Path, rank: int, world: int, staged: StagedOutput | None):
        self.staging, self.rank, self.world, self._staged = staging, rank, world, staged

    def gather(self, value):
        """Every rank's ``value``, in rank order, on rank 0 (None on the others); waits for every rank."""
        if not _distributed(self.world):
            return [value]
        import torch.distributed as dist

        values = [None] * self.world if self.rank == 0 else None
        dist.gather_object(value, values, dst=0)
        return values

    def commit(self) -> None:
        """After every rank has written its files: rank 0 moves the folder into place."""
        if _distributed(self.world):
            import torch.distributed as dist

            dist.barrier()
        if self._staged is not None:
            self._staged.commit()


@contextlib.contextmanager
def shared_folder(target: str | Path, rank: int, world: int, *, inputs: Iterable[str | Path] = (),
                  overwrite: bool = False, replaceable: Callable[[Path], bool],
                  log: Callable[[str], None] = lambda message: None) -> Iterator[SharedFolder]:
    """A :class:`SharedFolder` for ``target``; leaving the block without :meth:`SharedFolder.commit` removes it.

    A refusal on rank 0 (the target inside an input, another command's files there) is raised on every rank, so
    none waits for a folder that will not come.
    """
    staged = StagedOutput(target, "dir", overwrite=overwrite, inputs=inputs, log=log, replaceable=replaceable) \
        if rank == 0 else None
    message = None
    if staged is not None:
        try:
            staged.__enter__()
        except (OutputError, OSError) as error:  # refused, or not writable: every rank stops with this message
            if not _distributed(world):
                raise
            message = str(error)
    where = [str(staged.staging) if staged is not None and message is None else None, message]
    if _distributed(world):
        import torch.distributed as dist

        dist.broadcast_object_list(where, src=0)
    if where[1] is not None:
        raise OutputError(where[1])
    folder = SharedFolder(Path(where[0]), rank, world, staged)
    if staged is None:
        yield folder
        return
    with contextlib.ExitStack() as stack:
        stack.push(staged)  # its __exit__ removes an uncommitted staging folder and releases the lock
        yield folder
