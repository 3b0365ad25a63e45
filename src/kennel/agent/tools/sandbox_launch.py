"""Starts bubblewrap as the unprivileged sandbox user when Kennel runs as root.

`sandbox.py` runs it as `python -I -S sandbox_launch.py UID GID SOURCE STAGE ... -- BWRAP ...`.
Run as root, bwrap's user namespace would map the code's uid to the host's root; run as an
ordinary user, bwrap cannot reach folders under a private home (`/root/.pyenv`, a data folder
in `/root`), because it resolves every source path with that user's rights. So this script,
still root, makes a private mount namespace, covers `/tmp` there with a small tmpfs, binds each
SOURCE folder at its STAGE path inside it (where any user may reach it), drops to UID and GID
with no supplementary groups, and becomes BWRAP. It needs only the standard library: it runs
on Kennel's interpreter but must not import Kennel, and nothing it does outlives the sandbox.
"""

from __future__ import annotations

import ctypes
import os
import sys

# Covered by a fresh tmpfs, in a mount namespace of our own.
STAGE = b"/tmp"
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000


def main() -> int:
    uid, gid = int(sys.argv[1]), int(sys.argv[2])
    split = sys.argv.index("--")
    staged = sys.argv[3:split]
    program = sys.argv[split + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    _call(libc.unshare(CLONE_NEWNS), "unshare")
    # Private: nothing mounted here propagates back to the host's namespace.
    _call(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    # Opened after the unshare (a bind's source must belong to this namespace) and before
    # /tmp is covered, since a source may lie under it.
    folders = [
        os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for source in staged[0::2]
    ]
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _call(libc.mount(b"kennel", STAGE, b"tmpfs", flags, b"mode=1777,size=64k"), "mount /tmp")
    for folder, stage in zip(folders, staged[1::2], strict=True):
        os.mkdir(stage, 0o755)
        source = f"/proc/self/fd/{folder}".encode()
        _call(libc.mount(source, stage.encode(), None, MS_BIND | MS_REC, None), f"bind {stage}")
        os.close(folder)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.execv(program[0], program)  # noqa: S606 - Kennel's own bwrap command line


def _call(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise SystemExit(f"kennel sandbox launcher: {what}: {os.strerror(number)}")


if __name__ == "__main__":
    sys.exit(main())
