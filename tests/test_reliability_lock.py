"""The stale-lock takeover is atomic: many processes racing for a workdir whose lock was left by
a dead process end with exactly one owner, every trial."""

import json
import multiprocessing
import os
import socket
import subprocess

from jaxmem import lock

PROCESSES, TRIALS = 8, 20


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _racer(workdir, start, done, winners, trials):
    """Each trial: wait for the start barrier, try the lock once, report a win, and hold the lock
    until every racer has tried (so a later racer cannot legitimately take a released lock)."""
    for trial in range(trials):
        start.wait()
        try:
            lock.acquire(workdir)
            won = True
        except lock.WorkdirBusy:
            won = False
        if won:
            winners.put((trial, os.getpid()))
        done.wait()  # every racer has tried
        done.wait()  # the parent has read the lock file
        if won:
            lock.release(workdir)
        done.wait()  # released before the next trial's stale lock is written


def race(tmp_path):
    """Per trial: the pids that believed they owned the workdir, and the lock file's pid."""
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(PROCESSES + 1), context.Barrier(PROCESSES + 1)
    winners = context.Queue()
    racers = [context.Process(target=_racer, args=(workdir, start, done, winners, TRIALS))
              for _ in range(PROCESSES)]
    for racer in racers:
        racer.start()
    owners, holders = [], []
    stale = dict(pid=_dead_pid(), host=socket.gethostname(), started="then", command="launch/x.py")
    for _ in range(TRIALS):
        with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
            json.dump(stale, f)
        start.wait()
        done.wait()  # every racer has tried; winners still hold the lock
        holders.append((lock.read_owner(workdir) or {}).get("pid"))
        done.wait()
        done.wait()
    for racer in racers:
        racer.join(timeout=60)
    while not winners.empty():
        owners.append(winners.get(timeout=10))
    return [[pid for trial, pid in owners if trial == t] for t in range(TRIALS)], holders


def test_racing_takeovers_of_a_stale_lock_leave_exactly_one_owner_every_trial(tmp_path):
    per_trial, holders = race(tmp_path)
    assert [len(pids) for pids in per_trial] == [1] * TRIALS
    assert holders == [pids[0] for pids in per_trial]  # the lock file names the one owner
