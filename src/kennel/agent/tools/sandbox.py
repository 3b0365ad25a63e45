"""The Python sandbox behind the `run_python` tool: bubblewrap, rlimits and a wall timeout.

Code runs under `bwrap` with every namespace unshared (no network, its own process table),
the system read-only, a fresh `/tmp`, `/proc` and minimal `/dev`, the worker's workspace
writable as `/workspace` (the working directory) and an environment with nothing of Kennel's.
Nothing else of the host is visible: not the data folder, not the checkout, not the home.
Without a working `bwrap` the sandbox is unavailable and says why; it never runs code
unsandboxed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kennel.config import MB, Settings
from kennel.errors import KennelError

WORKSPACE = "/workspace"
TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, not the host's
INIT = "/opt/kennel/sandbox_init.py"
INIT_SOURCE = Path(__file__).with_name("sandbox_init.py")
PROBE_TIMEOUT_SECONDS = 10.0
READ_CHUNK = 64 * 1024
# Present on some systems as directories, on merged-/usr ones as links into /usr.
SYSTEM_ROOTS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": TMP,
    "TMPDIR": TMP,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


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
        self._bwrap = shutil.which(settings.sandbox_bwrap)
        self._python, prefix = _interpreter()
        self._mounts = _mounts(prefix, settings.sandbox_max_file_mb * MB)
        self.unavailable_reason = self._check()
        self.available = self.unavailable_reason is None

    async def run_python(self, code: str, workspace: Path) -> SandboxResult:
        """Run `code` with `workspace` as its writable working directory; kill it on timeout
        or when the caller is cancelled, and return once the sandbox is gone."""
        if self.unavailable_reason is not None:
            raise SandboxUnavailableError(
                f"the Python sandbox is unavailable: {self.unavailable_reason}"
            )
        workspace = await asyncio.to_thread(_prepare, workspace)
        stdout = _Capture(self._settings.sandbox_output_bytes)
        stderr = _Capture(self._settings.sandbox_output_bytes)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *self._command(workspace, self._limited_python()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            start_new_session=True,
        )
        timed_out = False
        try:
            async with asyncio.timeout(self._settings.sandbox_timeout_seconds):
                await _communicate(process, code.encode(), stdout, stderr)
        except TimeoutError:
            timed_out = True
        finally:
            await _kill(process)
        out, out_truncated = stdout.text()
        err, err_truncated = stderr.text()
        return SandboxResult(
            exit_code=None if timed_out else process.returncode,
            stdout=out,
            stderr=err,
            timed_out=timed_out,
            stdout_truncated=out_truncated,
            stderr_truncated=err_truncated,
            duration_seconds=time.monotonic() - started,
        )

    def _check(self) -> str | None:
        if not self._settings.sandbox_enabled:
            return "turned off (KENNEL_SANDBOX_ENABLED=false)"
        if self._bwrap is None:
            return (
                f"bwrap not found ({self._settings.sandbox_bwrap!r}; "
                "install the Debian package bubblewrap)"
            )
        if not self._python.is_file():
            return f"no Python interpreter at {self._python}"
        # Namespaces may be forbidden here (containers, hardened kernels): try the real thing.
        with tempfile.TemporaryDirectory() as empty:
            command = self._command(Path(empty), [str(self._python), "-I", "-S", "-c", "pass"])
            try:
                probe = subprocess.run(  # noqa: S603 - a fixed argv, no shell
                    command,
                    capture_output=True,
                    env={},
                    timeout=PROBE_TIMEOUT_SECONDS,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                return f"bwrap does not run here: {error}"
        if probe.returncode != 0:
            detail = probe.stderr.decode(errors="replace").strip() or f"exit {probe.returncode}"
            return f"bwrap does not work here: {detail}"
        return None

    def _limited_python(self) -> list[str]:
        settings = self._settings
        return [
            str(self._python),
            *("-I", "-S", INIT),
            str(settings.sandbox_cpu_seconds),
            str(settings.sandbox_memory_mb * MB),
            str(settings.sandbox_max_file_mb * MB),
            str(settings.sandbox_max_processes),
        ]

    def _command(self, workspace: Path, program: list[str]) -> list[str]:
        assert self._bwrap is not None
        command = [self._bwrap, *self._mounts, "--bind", str(workspace), WORKSPACE]
        command += ["--chdir", WORKSPACE, "--remount-ro", "/", "--clearenv"]
        for name, value in ENVIRONMENT.items():
            command += ["--setenv", name, value]
        return [*command, "--", *program]


def _mounts(prefix: Path | None, tmp_bytes: int) -> list[str]:
    """Namespaces, the read-only system, the interpreter and a fresh /tmp, /proc and /dev."""
    mounts = [
        *("--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"),
        *("--die-with-parent", "--new-session", "--hostname", "sandbox"),
        *("--ro-bind", "/usr", "/usr"),
    ]
    for root in SYSTEM_ROOTS:
        path = Path(root)
        if path.is_symlink():
            mounts += ["--symlink", os.readlink(path), root]
        elif path.is_dir():
            mounts += ["--ro-bind", root, root]
    if prefix is not None:
        mounts += ["--ro-bind", str(prefix), str(prefix)]
    return [
        *mounts,
        *("--ro-bind", str(INIT_SOURCE), INIT),
        *("--proc", "/proc", "--dev", "/dev", "--size", str(tmp_bytes), "--tmpfs", TMP),
    ]


def _prepare(workspace: Path) -> Path:
    workspace.mkdir(parents=True, exist_ok=True)
    return workspace.resolve()


def _interpreter() -> tuple[Path, Path | None]:
    """The interpreter Kennel runs on, without its virtualenv, and the prefix to bind for it.

    The same interpreter is always there and of a known version, unlike a system `python3`;
    its base installation rather than Kennel's virtualenv keeps Kennel's own packages out of
    the sandbox: the code gets the standard library. A prefix under `/usr` is bound already;
    another one (pyenv, uv) is bound read-only at its own path, since the interpreter finds
    its shared library there.
    """
    prefix = Path(sys.base_prefix).resolve()
    python = prefix / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return python, None if prefix.is_relative_to("/usr") else prefix


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
    # Killing bwrap's group kills bwrap; --die-with-parent then kills the sandbox's init, and
    # with it the kernel kills every process of its pid namespace. Reaping bwrap here means
    # no run outlives `run_python`, even a cancelled one.
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


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
