"""One server per data directory: `DataDirLock` holds an exclusive `flock` on
`crdtmds.lock` in the directory while a server (or a join) uses it, and writes its
process id there, so that a second `crdtmds start` on the same directory is refused at
once with the id of the process that serves it. The kernel drops the lock when the
process ends, however it ends, so a stale file never blocks a start."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from crdtmds.errors import ClusterError

LOCK_FILE = "crdtmds.lock"


class DataDirLock:
    """The held lock of one data directory; `release` (or process exit) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock `data_dir`, or raise ClusterError naming the process that holds it."""
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise ClusterError(
                f"{data_dir} is already served by {who}: stop it first, or use another "
                "--data directory",
                details={"data": str(data_dir), "pid": holder},
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    return None
