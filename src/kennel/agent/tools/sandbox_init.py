"""The first process inside the Python sandbox: limits, then the code, then a watch on the rest.

`sandbox.py` runs it under bwrap as `python -I -S sandbox_init.py CPU MEMORY FILE PROCESSES`
with the code on stdin. It needs only the standard library: the sandbox's interpreter has
nothing of Kennel installed. It forks; the child takes the limits and becomes `python -` (the
code, read from the inherited stdin); this process waits for it and watches the process count.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time

POLL_SECONDS = 0.02
# bwrap's own init (pid 1) and this watcher share the sandbox's process table with the code.
OVERHEAD = 2


def main() -> int:
    cpu_seconds, memory_bytes, file_bytes, processes = (int(arg) for arg in sys.argv[1:5])
    child = os.fork()
    if child == 0:
        _limit(cpu_seconds, memory_bytes, file_bytes, processes + OVERHEAD)
        os.execv(sys.executable, [sys.executable, "-s", "-"])  # noqa: S606 - fixed argv
    return _watch(child, processes, cpu_seconds)


def _limit(cpu_seconds: int, memory_bytes: int, file_bytes: int, tasks: int) -> None:
    # The soft CPU limit sends SIGXCPU, the hard one a second later SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _watch(child: int, processes: int, cpu_seconds: int) -> int:
    # The kernel does not enforce RLIMIT_NPROC for processes whose real uid is root outside
    # the user namespace (Kennel run as root): counting the sandbox's own /proc is the backstop.
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _exit_code(status, cpu_seconds)
        if _process_count() > processes + OVERHEAD:
            os.kill(-1, signal.SIGKILL)  # every process of the sandbox but bwrap's and ours
            os.waitpid(child, 0)
            _say(f"more than {processes} processes: all of them were killed")
            return 128 + signal.SIGKILL
        time.sleep(POLL_SECONDS)


def _process_count() -> int:
    return sum(name.isdigit() for name in os.listdir("/proc"))


def _exit_code(status: int, cpu_seconds: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return code
    number = -code
    if number == signal.SIGXCPU or (number == signal.SIGKILL and _cpu_spent() >= cpu_seconds):
        _say(f"CPU time limit of {cpu_seconds} s reached")
    else:
        _say(f"killed by {signal.Signals(number).name}")
    return 128 + number


def _cpu_spent() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _say(message: str) -> None:
    print(f"[sandbox: {message}]", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
