"""One owner per workdir: a lock file `<workdir>/.lock` taken by every launcher and the sweep driver.

The lock is a JSON file {"pid", "host", "started", "command"} created complete or not at all
(jaxmem.io.write_new: a hard link of a finished temporary file, which fails when the lock
exists), so of two processes that try at once exactly one gets it and no reader sees it
half-written. A lock whose owner is gone is stale: when its host is this host and its pid no
longer exists, it is taken over (and a warning says so). The takeover is atomic: it runs under
an exclusive flock of `<workdir>/.lock.takeover` (a file kept in place; stale locks are
same-host, so a host-local flock suffices), re-reads the lock there and replaces it with a
finished file of its own (rename) only while it still holds the dead owner's record; a racer
that read the same stale lock finds a live owner once it gets the flock. Nobody ever removes a
lock that another live process has just taken. A lock written on another host cannot be
checked from here: it is refused with a message that says how to remove it if its owner is
gone. A lock that cannot be read (a foreign file) is refused the same way. A workdir where the
lock cannot be written (a read-only or pseudo filesystem) raises jaxmem.io.WriteError.

Multi-host jobs (one process per host on a shared filesystem): only process 0 takes the lock;
the other processes of the job write under process 0's ownership.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import time

from absl import logging

from jaxmem import io

LOCK_FILE = ".lock"


class WorkdirBusy(RuntimeError):
    """The workdir is locked by another (live, or uncheckable) process; the message says by whom."""


def lock_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), LOCK_FILE)


def read_owner(workdir: str) -> dict | None:
    """The lock's record {"pid", "host", "started", "command"}, {} when unreadable, None when unlocked."""
    try:
        with open(lock_path(workdir)) as f:
            owner = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def owner_alive(owner: dict) -> bool | None:
    """True/False whether the lock's owner process exists; None when it cannot be checked from here
    (another host, or an unreadable lock)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def describe(owner: dict) -> str:
    """'pid P on host H since T (command C)' of a lock record."""
    if not owner:
        return "an unreadable lock"
    return (f"pid {owner.get('pid')} on host {owner.get('host')} since {owner.get('started')} "
            f"({owner.get('command', '?')})")


def _record() -> str:
    """This process's lock record as JSON text."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": datetime.datetime.now().isoformat(timespec="seconds"),
                       "command": shlex.join(sys.argv)})


def _take_over(workdir: str, stale: dict) -> bool:
    """Replaces the stale lock holding record `stale` with this process's, under the takeover
    flock; False when the lock changed meanwhile (released, or taken by another process)."""
    path = lock_path(workdir)
    with io.writing(path + ".takeover"):
        guard = os.open(path + ".takeover", os.O_RDWR | os.O_CREAT, io.file_mode())
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if read_owner(workdir) != stale:
            return False
        with io.atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(_record())
        return True
    finally:
        os.close(guard)  # closing releases the flock


def acquire(workdir: str) -> None:
    """Takes `workdir`'s lock (creating the folder); takes over a stale one.

    Raises WorkdirBusy naming the owner when a live or uncheckable process holds it, and
    jaxmem.io.WriteError when the lock cannot be written.
    """
    path = lock_path(workdir)
    for _ in range(3):  # the lock may change between our attempt and the read: try again
        if io.write_new(path, _record()):
            return
        owner = read_owner(workdir)
        if owner is None:  # released between our attempt and the read
            continue
        alive = owner_alive(owner)
        if alive is False:
            if _take_over(workdir, owner):
                logging.warning("taking over the stale lock of %s: that process is gone", describe(owner))
                return
            continue
        if alive:
            raise WorkdirBusy(f"{workdir} is in use by {describe(owner)}; wait for it to finish or stop it, "
                              "or use another --workdir")
        raise WorkdirBusy(f"{workdir} is locked by {describe(owner)}, which cannot be checked from host "
                          f"{socket.gethostname()}; if that process is gone, remove {path} and rerun")
    raise WorkdirBusy(f"{workdir}: could not take {path} (other processes keep taking it)")


def release(workdir: str) -> None:
    """Removes `workdir`'s lock if this process holds it (safe to call twice)."""
    owner = read_owner(workdir)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock_path(workdir))


@contextlib.contextmanager
def held(workdir: str, enabled: bool = True):
    """acquire(workdir) for the duration of the block (nothing when not `enabled`, e.g. on the
    processes other than 0 of a multi-host job); released on exit, also on an exception."""
    if not enabled:
        yield
        return
    acquire(workdir)
    try:
        yield
    finally:
        release(workdir)


def wait_until_free(workdir: str, timeout_s: float, poll_s: float = 2.0, log_every_s: float = 60.0) -> dict | None:
    """Waits while a live process holds `workdir`'s lock (a log line when the wait starts and every
    log_every_s); returns None once it is free or stale, else the owner's record when timeout_s
    passed or the owner cannot be checked from here."""
    start, logged = time.monotonic(), None
    while True:
        owner = read_owner(workdir)
        alive = None if owner is None else owner_alive(owner)
        if owner is None or alive is False:
            return None
        if alive is None or time.monotonic() - start >= timeout_s:
            return owner
        if logged is None or time.monotonic() - logged >= log_every_s:
            logging.info("%s is in use by %s; waiting for it (up to %.0f s)", workdir, describe(owner), timeout_s)
            logged = time.monotonic()
        time.sleep(poll_s)
