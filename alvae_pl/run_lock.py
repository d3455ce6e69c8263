"""One process per run folder: a lock file that names its owner, taken before anything is written.

Two ``train.py`` processes on one run folder (started together, or a runner started again while its orphaned child
still trains) would write into the same records. The lock file ``run.lock`` is created atomically (``O_EXCL``),
holds the owner's host, pid and process start time, and is removed when the process ends. A lock whose process is
gone (killed with SIGKILL, the machine rebooted) is stale: the next run on the folder takes it over. On another
host the owner cannot be checked, so its lock is honoured until someone removes the file.

Imports no torch, so that ``experiment.py list`` stays fast.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from alvae_pl.run_folder import CONFIG_FILENAME, LOCK_FILENAME


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run folder's lock."""

    host: str
    pid: int
    #: The process's start time in clock ticks since boot (``/proc/<pid>/stat``), to tell a reused pid apart; 0 where
    #: unknown.
    started: int
    command: str

    @classmethod
    def this_process(cls) -> LockOwner:
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()), " ".join(sys.argv)[:300])

    def is_alive(self) -> bool:
        """Whether the owner still runs: checked on this host; an owner on another host counts as alive."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return not self.started or _process_start(self.pid) in (0, self.started)

    def describe(self) -> str:
        where = "" if self.host == socket.gethostname() else f" on host {self.host}"
        return f"process {self.pid}{where} ({self.command})"


def _process_start(pid: int) -> int:
    """A process's start time in clock ticks since boot (Linux), or 0 where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 of the file


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


def read_lock(folder: str | Path) -> LockOwner | None:
    """The owner recorded in ``<folder>/run.lock``, or ``None`` when there is none (or it is unreadable)."""
    try:
        return LockOwner(**json.loads((Path(folder) / LOCK_FILENAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def live_owner(folder: str | Path) -> LockOwner | None:
    """The process running in ``folder`` now, or ``None`` (no lock, or a stale one)."""
    owner = read_lock(folder)
    return owner if owner is not None and owner.is_alive() else None


class RunLock:
    """``<folder>/run.lock``, held by this process from :meth:`acquire` to :meth:`release`.

    Args:
        folder: the run folder; created by ``acquire`` if missing (and removed again by ``release(failed=True)``
            when training never started in it).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILENAME
        self.held = False
        self._created: list[Path] = []

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunFolderBusy` naming the process that holds it, or an ``OSError`` that
        says the folder cannot be written."""
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _unwritable(self.folder, error) from None
        self._created = missing  # innermost first: the order to remove them in
        owner = LockOwner.this_process()
        for _ in range(2):  # a second try after removing a stale lock
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.folder)
                if holder is not None and holder.is_alive():
                    raise RunFolderBusy(
                        f"{self.folder} is in use by {holder.describe()}: wait for it to end, or run in another folder "
                        f"with --trainer.logger.init_args.version <name> (if that process is gone, delete {self.path})"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as error:
                raise _unwritable(self.folder, error) from None
            with os.fdopen(descriptor, "w") as handle:
                json.dump(asdict(owner), handle)
            self.held = True
            return
        raise RunFolderBusy(f"{self.folder}: another process took {self.path} at the same moment; try again")

    def release(self, failed: bool = False) -> None:
        """Remove the lock file if this process holds it.

        After a ``failed`` run that never started training (no ``config.yaml``, which is written when training
        starts), a run folder that ``acquire`` created is removed with what this process wrote into it (a
        TensorBoard events file, say): a refused run leaves nothing behind. A folder that existed before is never
        removed, and neither is one where training started.
        """
        if not self.held:
            return
        owner = read_lock(self.folder)
        if owner is not None and owner.pid == os.getpid() and owner.host == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False
        if not failed or not self._created:
            return
        if not (self.folder / CONFIG_FILENAME).exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        for folder in self._created:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: something of the run's (or of another's) is in it
                break


class RunFolderUnwritable(OSError):
    """The run folder cannot be created or written; ``str()`` is the one line that says what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def _unwritable(folder: Path, error: OSError) -> RunFolderUnwritable:
    reason = {errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied"}.get(
        error.errno or 0, error.strerror or str(error)
    )
    return RunFolderUnwritable(
        error.errno,
        f"cannot write in the run folder {folder} ({reason}): make it writable, or run in another folder with "
        "--trainer.logger.init_args.save_dir <folder>",
    )
