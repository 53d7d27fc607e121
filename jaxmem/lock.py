"""One owner per workdir: a lock file `<workdir>/.lock` taken by every launcher and the sweep driver.

The lock is a JSON file {"pid", "host", "started", "command"} created atomically with
O_CREAT | O_EXCL, so of two processes that try at once exactly one gets it. A lock whose
owner is gone is stale: when its host is this host and its pid no longer exists, it is taken
over (and a warning says so). A lock written on another host cannot be checked from here: it
is refused with a message that says how to remove it if its owner is gone. A lock that cannot
be read (a half-written or foreign file) is refused the same way.

Multi-host jobs (one process per host on a shared filesystem): only process 0 takes the lock;
the other processes of the job write under process 0's ownership.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import time

from absl import logging

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


def _create(path: str) -> bool:
    """Creates the lock file holding this process's record; False when it already exists."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": shlex.join(sys.argv)}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def acquire(workdir: str) -> None:
    """Takes `workdir`'s lock (creating the folder); takes over a stale one.

    Raises WorkdirBusy naming the owner when a live or uncheckable process holds it.
    """
    path = lock_path(workdir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(3):  # a stale lock removed here may be re-taken by a racing process
        if _create(path):
            return
        owner = read_owner(workdir)
        if owner is None:  # released between our attempt and the read
            continue
        alive = owner_alive(owner)
        if alive is False:
            logging.warning("taking over the stale lock of %s: that process is gone", describe(owner))
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
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
