"""Work handed to a background thread, off the inference loop: encoding and writing image files.

PNG encoding (zlib) and file writes run in Pillow's and the OS's C code with the GIL released, so a thread
overlaps them with the forward passes. The queue is bounded: a writer that falls behind holds the loop up
instead of piling decoded images in memory. The first error raised in the thread is raised again in the
caller, at the next submission or at :meth:`BackgroundWork.finish`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable


class BackgroundWork:
    """Run callables in one background thread, in order; use as a context manager (``finish`` on a clean exit).

    ``context``: entered in the thread around all its work (e.g. :func:`one_torch_thread`).
    """

    def __init__(self, pending: int = 8,
                 context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self._queue: queue.Queue = queue.Queue(maxsize=pending)
        self._error: BaseException | None = None
        self._context = context
        self._thread = threading.Thread(target=self._run, name="layerseg-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._context():
            while True:
                task = self._queue.get()
                if task is None:
                    return
                if self._error is None:  # after an error the rest is skipped (and the caller told)
                    try:
                        task()
                    except BaseException as error:  # noqa: BLE001 (raised again in the caller)
                        self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, task: Callable[[], None]) -> None:
        """Queue ``task`` (waits while the queue is full); raises an earlier task's error."""
        self._raise()
        self._queue.put(task)

    def finish(self) -> None:
        """Wait for every queued task; raises the first error one of them raised."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def __enter__(self) -> BackgroundWork:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.finish()
            return
        self._error = self._error or error  # skip what is still queued, then stop the thread
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


@contextlib.contextmanager
def one_torch_thread():
    """torch's CPU operations of the calling thread on one core (OpenMP's thread count is per thread), restored
    after: work beside the forward passes then takes one core's share instead of spinning threads on every core
    (on 2 busy cores, a painted 512x1024 image took 0.23 s of CPU time with 2 threads, 0.03 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
