"""What every long-running process of the pipeline shares: a clean stop on SIGINT/SIGTERM.

A worker has `running` (cleared to stop), `run() -> exit code` and `close()`. The launcher
stops processes with SIGTERM; a person with Ctrl-C; either way the loop ends at its next check
and resources are released, so any process can be stopped and restarted alone.
"""
from __future__ import annotations

import signal


def run_until_stopped(worker) -> int:
    def stop(signum, _frame):
        worker.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return worker.run()
    finally:
        worker.close()
