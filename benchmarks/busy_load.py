"""
A bounded busy load: spin on one CPU core until the parent process goes away, a deadline passes, or SIGTERM comes
(then print the CPU seconds it spun). Standard library only; run as a script, `python -I -S busy_load.py PARENT_PID
MAX_SECONDS`, by `benchmarks.contention.busy_core`.
"""

import os
import signal
import sys
import time


def spin(parent: int, max_seconds: float) -> None:
    """Busy-loop, checking every ~1 ms that `parent` is still this process's parent and the deadline is ahead."""
    deadline, start = time.monotonic() + max_seconds, time.process_time()

    def stop(*_) -> None:
        print(time.process_time() - start, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("spinning", flush=True)
    while os.getppid() == parent and time.monotonic() < deadline:
        for _ in range(10_000):
            pass


if __name__ == "__main__":
    spin(int(sys.argv[1]), float(sys.argv[2]))
