"""Run one command; report its wall time, peak RSS and exit status as JSON on a given fd.

``python -m bench.spawn FD TIMEOUT COMMAND...`` (TIMEOUT in seconds, 0: none).

Linux counts the memory a process had when it forked into the ru_maxrss of the child it
became (the child starts as a copy, and ``exec`` keeps the larger high-water mark). A
command started straight from the bench process, which has imported pandas and may have
read a workbook, would so report at least the bench's own peak. Started from this small
process instead (about 10 MB, less than any Python command it runs), the figure is the
command's own, as ``/usr/bin/time -v`` would report it. Standard library only, on purpose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType


def main() -> None:
    fd, timeout, *command = sys.argv[1:]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    timed_out = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal timed_out
        timed_out = True
        child.kill()

    if float(timeout) > 0:
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, float(timeout))
    _, status, usage = os.wait4(child.pid, 0)  # retried after the alarm's handler (PEP 475)
    seconds = time.perf_counter() - start
    signal.setitimer(signal.ITIMER_REAL, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    with os.fdopen(int(fd), "w") as report:
        json.dump({"seconds": seconds, "peak_bytes": usage.ru_maxrss * 1024,  # Linux: KB
                   "returncode": child.returncode, "timed_out": timed_out}, report)


if __name__ == "__main__":
    main()
