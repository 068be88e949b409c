"""The worker processes of a parallel cache build, and how they end with the build.

Workers are forked from a clean server process (:func:`worker_context`) and end as soon as
the build's main process ends, however it ends (:func:`exit_with`).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time

from ctvoco.cache.volume_cache import pid_alive

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""``prctl`` option (Linux): the signal a process gets when its parent ends."""
WATCH_INTERVAL_S = 0.5
"""How often a worker checks its main process where it cannot wait on a process handle."""
EXIT_MAIN_GONE = 70
"""Exit status of a worker that ends because the build's main process ended."""


def worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a clean server process where available, spawned elsewhere.

    Plain fork is not safe here: the parent may hold OpenCV or torch thread pools, and a
    forked child can deadlock on their locks.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["ctvoco.cache.builder"])
        return context
    return multiprocessing.get_context("spawn")


def start_worker_server() -> None:
    """Start the server process that preprocessing workers are forked from, ahead of time.

    Optional (a parallel build starts it when needed): a program that calls this first
    lets the server import the preprocessing modules while the program itself is still
    importing and scanning, instead of afterwards. Does nothing where workers are spawned.
    """
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def init_worker(main_pid: int) -> None:
    """Set up a worker process: OpenCV single-threaded, and end with the main process."""
    import ctvoco.opencv  # noqa: F401  (OpenCV single-threaded in workers too)

    exit_with(main_pid)


def exit_with(main_pid: int) -> None:
    """End this process as soon as process ``main_pid`` ends, however it ends.

    Workers are children of the fork server, not of the build's main process, and a killed
    main process cannot stop them: they would go on writing arrays nobody records, and keep
    the fork server and the resource tracker alive. So a daemon thread waits for the main
    process to end (on a process handle where the OS has one, else polling every
    :data:`WATCH_INTERVAL_S`) and then exits. On Linux the process is also killed when its
    direct parent ends (``PR_SET_PDEATHSIG``).
    """
    if sys.platform.startswith("linux"):
        _kill_when_parent_ends()
    if not pid_alive(main_pid):
        os._exit(EXIT_MAIN_GONE)
    watcher = threading.Thread(
        target=_exit_when_gone, args=(main_pid,), name="ctvoco-main-watch", daemon=True
    )
    watcher.start()


def _kill_when_parent_ends() -> None:
    """Linux: have the kernel send SIGKILL to this process when its parent ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: the watcher thread still works
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def _exit_when_gone(pid: int) -> None:
    """Block until process ``pid`` ends, then end this process."""
    try:
        handle = os.pidfd_open(pid)  # Linux >= 5.3: readable once the process has ended
    except (AttributeError, OSError):
        while pid_alive(pid):
            time.sleep(WATCH_INTERVAL_S)
    else:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        while not poller.poll():
            pass
    os._exit(EXIT_MAIN_GONE)
