"""What every long-running process of the pipeline shares: a clean stop on SIGINT/SIGTERM.

A worker has `running` (cleared to stop), `run() -> exit code` and `close()`. The launcher
stops processes with SIGTERM; a person with Ctrl-C; either way the loop ends at its next check
and resources are released, so any process can be stopped and restarted alone.

Exit codes the launcher and people can tell apart: EXIT_CONFIG (bad configuration) and
EXIT_TRANSPORT (an endpoint cannot be bound or connected, e.g. "Address already in use").
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

EXIT_CONFIG = 2
EXIT_TRANSPORT = 3

log = logging.getLogger("perception.lifecycle")


def run_until_stopped(worker) -> int:
    def stop(signum, _frame):
        worker.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watch_parent()
    try:
        return worker.run()
    finally:
        worker.close()


def watch_parent(period_s: float = 0.5, grace_s: float = 5.0) -> bool:
    """The portable fallback of the launcher's parent-death signal (Linux prctl): when the
    launcher set PERCEPTION_WATCH_PARENT=<its pid> and this process's parent changes (the
    launcher died, the process was re-parented), SIGTERM ourselves, and exit hard if that has
    not ended the process within grace_s. Returns whether a watchdog was started."""
    want = os.environ.get("PERCEPTION_WATCH_PARENT")
    if not want or not want.isdigit():
        return False
    parent = int(want)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        log.error("launcher (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="perception-watch-parent").start()
    return True
