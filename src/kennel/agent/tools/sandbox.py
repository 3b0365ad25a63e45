"""The Python sandbox behind the `run_python` tool: bubblewrap, rlimits, a watcher, a timeout.

Code runs under `bwrap` with every namespace unshared (no network, its own process table) as
an unprivileged host user (`KENNEL_SANDBOX_USER` when Kennel is root, else Kennel's own user),
with no capabilities, the system read-only, a fresh `/tmp`, `/proc` and minimal `/dev`, the
worker's workspace writable as `/workspace` (the working directory) and an environment with
nothing of Kennel's. Nothing else of the host is visible: not the data folder, not the checkout,
not the home, not other workspaces (`sandbox_command.py` lists what is). A watcher inside
(`sandbox_init.py`) bounds what rlimits cannot: processes, memory of all of them together, the
workspace's disk use; Kennel checks the workspace again after the run and rolls back a run that
left it over its limit (`sandbox_workspace.py`). Without a working `bwrap` the sandbox is
unavailable and says why; it never runs code unsandboxed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kennel.agent.tools.sandbox_command import INIT_SOURCE, Owner, SandboxCommand
from kennel.agent.tools.sandbox_workspace import Survey, roll_back, survey
from kennel.config import MB, Settings
from kennel.errors import KennelError

# Three interpreter starts (launcher, watcher, code): generous for a loaded machine at boot.
PROBE_TIMEOUT_SECONDS = 30.0
READ_CHUNK = 64 * 1024
logger = logging.getLogger(__name__)


class SandboxUnavailableError(KennelError):
    code = "sandbox_unavailable"


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one run printed and how it ended; `exit_code` is None when the wall timeout hit."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool
    duration_seconds: float


class Sandbox:
    """Runs Python code under bubblewrap; `available` says whether it can, here.

    Built once at start by the composition root: the check runs `bwrap` synchronously.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        bwrap = shutil.which(settings.sandbox_bwrap)
        self._owner, owner_problem = _sandbox_owner(settings.sandbox_user)
        self._command = SandboxCommand(settings, bwrap or settings.sandbox_bwrap, self._owner)
        self._init_source = INIT_SOURCE.read_bytes()
        self.unavailable_reason = self._check(bwrap, owner_problem)
        self.available = self.unavailable_reason is None

    async def run_python(self, code: str, workspace: Path) -> SandboxResult:
        """Run `code` with `workspace` as its writable working directory; kill it on timeout
        or when the caller is cancelled, and return once every process of it is gone."""
        if self.unavailable_reason is not None:
            raise SandboxUnavailableError(
                f"the Python sandbox is unavailable: {self.unavailable_reason}"
            )
        workspace = await asyncio.to_thread(_prepare, workspace)
        before = await asyncio.to_thread(survey, workspace, self._owner)
        # A workspace already past the cap (uploads) may keep what it has, not grow.
        limit = max(self._settings.sandbox_workspace_mb * MB, before.used)
        stdout = _Capture(self._settings.sandbox_output_bytes)
        stderr = _Capture(self._settings.sandbox_output_bytes)
        started = time.monotonic()
        timed_out = False
        init = self._init_pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command.argv(workspace, init, limit),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={},
                start_new_session=True,
                pass_fds=(init,),
            )
        finally:
            os.close(init)
        try:
            async with asyncio.timeout(self._settings.sandbox_timeout_seconds):
                await _communicate(process, code.encode(), stdout, stderr)
        except TimeoutError:
            timed_out = True
        finally:
            await _kill(process)
            # Even a cancelled run may not leave the workspace over its limit.
            note = await asyncio.to_thread(self._settle, workspace, before, limit)
        out, out_truncated = stdout.text()
        err, err_truncated = stderr.text()
        if note is not None:
            err += f"[sandbox: {note}]\n"
        return SandboxResult(
            exit_code=None if timed_out else process.returncode,
            stdout=out,
            stderr=err,
            timed_out=timed_out,
            stdout_truncated=out_truncated,
            stderr_truncated=err_truncated,
            duration_seconds=time.monotonic() - started,
        )

    def _settle(self, workspace: Path, before: Survey, limit: int) -> str | None:
        """Hand the workspace back over and roll the run back if it left it over its limit."""
        try:
            after = survey(workspace, self._owner)
            if not after.is_over(limit):
                return None
            return roll_back(workspace, before, after, limit, self._owner)
        except FileNotFoundError:  # the workspace was deleted meanwhile: nothing to settle
            return None
        except OSError as error:
            # Runs in a `finally`: an error here must not hide the run's own outcome or its
            # cancellation. Said in the run's stderr and logged for the operator.
            logger.warning("could not check the workspace %s after a run: %s", workspace, error)
            return f"the workspace could not be checked after the run: {error}"

    def _init_pipe(self) -> int:
        """A pipe holding the watcher's source, for bwrap to copy into the sandbox."""
        read, write = os.pipe()
        try:
            # Far smaller than a pipe's buffer (64 KiB): this write never blocks.
            os.write(write, self._init_source)
        finally:
            os.close(write)
        return read

    def _check(self, bwrap: str | None, owner_problem: str | None) -> str | None:
        if not self._settings.sandbox_enabled:
            return "turned off (KENNEL_SANDBOX_ENABLED=false)"
        if bwrap is None:
            return (
                f"bwrap not found ({self._settings.sandbox_bwrap!r}; "
                "install the Debian package bubblewrap)"
            )
        if owner_problem is not None:
            return owner_problem
        python = self._command.interpreter.host
        if not python.is_file():
            return f"no Python interpreter at {python}"
        # Namespaces may be forbidden here (containers, hardened kernels): try the real thing.
        with tempfile.TemporaryDirectory() as empty:
            workspace = Path(empty)
            if self._owner is not None:
                os.chown(workspace, *self._owner)
            init = self._init_pipe()
            try:
                probe = subprocess.run(  # noqa: S603 - Kennel's own command line, no shell
                    self._command.argv(workspace, init, MB),
                    input=b"",
                    capture_output=True,
                    env={},
                    timeout=PROBE_TIMEOUT_SECONDS,
                    check=False,
                    pass_fds=(init,),
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                return f"bwrap does not run here: {error}"
            finally:
                os.close(init)
        if probe.returncode != 0:
            detail = probe.stderr.decode(errors="replace").strip() or f"exit {probe.returncode}"
            return f"bwrap does not work here: {detail}"
        return None


def _sandbox_owner(user: str) -> tuple[Owner | None, str | None]:
    """Who the sandbox runs as when Kennel is root, or why it cannot; None when Kennel is not."""
    if os.geteuid() != 0:
        return None, None
    try:
        if ":" in user:
            uid, gid = (int(part) for part in user.split(":", 1))
        else:
            entry = pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
    except (KeyError, ValueError):
        return None, f"no user {user!r} to run it as (KENNEL_SANDBOX_USER: a name or uid:gid)"
    if uid == 0 or gid == 0:
        return None, f"KENNEL_SANDBOX_USER={user} is root; sandboxed code must not run as root"
    return (uid, gid), None


def _prepare(workspace: Path) -> Path:
    workspace.mkdir(parents=True, exist_ok=True)
    return workspace.resolve()


async def _communicate(
    process: asyncio.subprocess.Process, code: bytes, stdout: _Capture, stderr: _Capture
) -> None:
    assert process.stdin and process.stdout and process.stderr
    async with asyncio.TaskGroup() as group:
        group.create_task(_feed(process.stdin, code))
        group.create_task(stdout.read(process.stdout))
        group.create_task(stderr.read(process.stderr))
    await process.wait()


async def _feed(stdin: asyncio.StreamWriter, code: bytes) -> None:
    # The code may exit before it read all of itself; that is its business, not an error.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(code)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()


async def _kill(process: asyncio.subprocess.Process) -> None:
    # Killing the sandbox's PID 1 makes the kernel kill every process of its PID namespace
    # before bwrap can reap it and exit: once bwrap is reaped here, nothing of the run is left,
    # even of a cancelled one. Killing bwrap alone would leave that to --die-with-parent, later.
    if process.returncode is None and not _kill_sandbox(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


def _kill_sandbox(bwrap: int) -> bool:
    """SIGKILL bwrap's child, the sandbox's PID 1; False if there is none to be found."""
    killed = False
    for pid in _children(bwrap):
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            # Still bwrap's child once we hold a descriptor: it is that process, not a reuse.
            if pid in _children(bwrap):
                signal.pidfd_send_signal(handle, signal.SIGKILL)
                killed = True
        except ProcessLookupError:
            pass
        finally:
            os.close(handle)
    return killed


def _children(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN, or bwrap is gone
        return []
    return [int(child) for child in listed.split()]


class _Capture:
    """The first and last halves of at most `limit` bytes of a stream, and how much was left out."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(READ_CHUNK):
            self.add(chunk)

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        del self._tail[: max(0, len(self._tail) - self._tail_limit)]

    def text(self) -> tuple[str, bool]:
        """The captured text, with a marker where bytes were left out, and whether any were."""
        left_out = self._total - len(self._head) - len(self._tail)
        if not left_out:
            return (self._head + self._tail).decode(errors="replace"), False
        head = self._head.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        return f"{head}\n[... {left_out} bytes truncated ...]\n{tail}", True
