"""The command line of one sandbox run: who runs bwrap, what the sandbox sees, and its limits.

The sandbox sees the system read-only (`/usr` and its links), the interpreter at `/opt/python`
(unless it lives under `/usr`), the watcher at `/opt/kennel` (copied in from a pipe, so no host
path names it), a fresh `/proc` whose kernel settings and triggers are read-only, a read-only
`/dev` with a small `/dev/shm`, a small `/tmp`, and the workspace at `/workspace`. Host paths
still show in `/proc/self/mountinfo` as the roots of the bind mounts (the interpreter's and the
workspace's folders): the kernel names a bind mount's source within its filesystem.

When Kennel runs as root, `sandbox_launch.py` stages the interpreter and the workspace where
the sandbox user can reach them and starts bwrap as that user; otherwise bwrap runs as Kennel's
own user. Either way no process of the sandbox is root on the host.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kennel.config import MB, Settings

Owner = tuple[int, int]
WORKSPACE = "/workspace"
TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, not the host's
SHM = "/dev/shm"  # noqa: S108 - idem, for POSIX shared memory and semaphores
PYTHON_HOME = "/opt/python"
INIT = "/opt/kennel/sandbox_init.py"
INIT_SOURCE = Path(__file__).with_name("sandbox_init.py")
LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
# Where the launcher binds the folders bwrap could not reach as the sandbox user.
STAGED_PYTHON = "/tmp/python"  # noqa: S108 - a tmpfs of the launcher's own mount namespace
STAGED_WORKSPACE = "/tmp/workspace"  # noqa: S108 - idem
# Present on some systems as directories, on merged-/usr ones as links into /usr.
SYSTEM_ROOTS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Kernel settings, the SysRq trigger and hardware tables: bound read-only over the fresh /proc.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs", "pressure")
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": TMP,
    "TMPDIR": TMP,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True, slots=True)
class Interpreter:
    """The host's interpreter, the prefix to bind for it (None under /usr), its sandbox path."""

    host: Path
    prefix: Path | None
    program: str

    @classmethod
    def of_kennel(cls) -> Interpreter:
        """The interpreter Kennel runs on, without its virtualenv.

        The same interpreter is always there and of a known version, unlike a system
        `python3`; its base installation rather than Kennel's virtualenv keeps Kennel's own
        packages out of the sandbox: the code gets the standard library. A prefix under `/usr`
        is bound already; another one (pyenv, uv) is bound read-only at /opt/python.
        """
        prefix = Path(sys.base_prefix).resolve()
        name = f"python{sys.version_info.major}.{sys.version_info.minor}"
        host = prefix / "bin" / name
        if prefix.is_relative_to("/usr"):
            return cls(host, None, str(host))
        return cls(host, prefix, f"{PYTHON_HOME}/bin/{name}")


class SandboxCommand:
    """Builds the argv that runs the watcher and the code under bwrap, as the sandbox user."""

    def __init__(self, settings: Settings, bwrap: str, owner: Owner | None) -> None:
        self._settings = settings
        self._bwrap = bwrap
        self._owner = owner
        self.interpreter = Interpreter.of_kennel()

    def argv(self, workspace: Path, init_fd: int, workspace_bytes: int) -> list[str]:
        """The command for a run in `workspace`; the watcher's source is readable on `init_fd`."""
        python = self.interpreter.prefix
        staged: list[str] = []
        if self._owner is not None:
            if python is not None:
                staged += [str(python), STAGED_PYTHON]
                python = Path(STAGED_PYTHON)
            staged += [str(workspace), STAGED_WORKSPACE]
            workspace = Path(STAGED_WORKSPACE)
        command = [self._bwrap, *self._mounts(python, workspace, init_fd), *self._environment()]
        command += ["--", self.interpreter.program, "-I", "-S", INIT]
        command += self._limits(workspace_bytes)
        if self._owner is None:
            return command
        uid, gid = self._owner
        launcher = [sys.executable, "-I", "-S", str(LAUNCHER), str(uid), str(gid), *staged]
        return [*launcher, "--", *command]

    def _mounts(self, python: Path | None, workspace: Path, init_fd: int) -> list[str]:
        tmp_bytes = str(self._settings.sandbox_max_file_mb * MB)
        mounts = [
            *("--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"),
            *("--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox"),
            *("--ro-bind", "/usr", "/usr"),
        ]
        for root in SYSTEM_ROOTS:
            path = Path(root)
            if path.is_symlink():
                mounts += ["--symlink", os.readlink(path), root]
            elif path.is_dir():
                mounts += ["--ro-bind", root, root]
        if python is not None:
            mounts += ["--ro-bind", str(python), PYTHON_HOME]
        mounts += ["--ro-bind-data", str(init_fd), INIT, "--proc", "/proc"]
        for name in PROC_READ_ONLY:
            if Path("/proc", name).exists():
                mounts += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
        mounts += ["--dev", "/dev", "--size", tmp_bytes, "--tmpfs", SHM]
        mounts += ["--remount-ro", "/dev", "--size", tmp_bytes, "--tmpfs", TMP]
        mounts += ["--bind", str(workspace), WORKSPACE, "--chdir", WORKSPACE]
        return [*mounts, "--remount-ro", "/"]

    def _environment(self) -> list[str]:
        environment = dict(ENVIRONMENT)
        if self.interpreter.prefix is not None:
            # Its shared library is looked up where it was built (RUNPATH), not at /opt/python.
            environment["LD_LIBRARY_PATH"] = f"{PYTHON_HOME}/lib"
        options = ["--clearenv"]
        for name, value in environment.items():
            options += ["--setenv", name, value]
        return options

    def _limits(self, workspace_bytes: int) -> list[str]:
        settings = self._settings
        return [
            str(settings.sandbox_cpu_seconds),
            str(settings.sandbox_memory_mb * MB),
            str(settings.sandbox_max_file_mb * MB),
            str(settings.sandbox_max_processes),
            str(settings.sandbox_total_memory_mb * MB),
            str(workspace_bytes),
        ]
