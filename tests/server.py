"""A real `kennel serve` subprocess on a free loopback port, for conformance and crash tests."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fakellm import FakeLLM

KENNEL = Path(sys.executable).with_name("kennel")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: a crashed or killed test run leaves no server behind.

    Linux ties this signal to the *thread* that started the child, so start servers from the
    main thread: a server started from a worker thread dies when that thread ends.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def python_lines(script: str, env: dict[str, str] | None = None) -> list[str]:
    """What `script` prints, line by line, run by a fresh interpreter of this environment
    (with `env`, else this process's); it must exit cleanly."""
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KennelServer:
    """Starts, kills and restarts one server on one data folder; output goes to `log`."""

    def __init__(self, data_dir: Path, llm: FakeLLM | None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        self.env = {
            **os.environ,
            "KENNEL_DATA_DIR": str(data_dir),
            "KENNEL_PUBLIC_URL": self.base_url,
            "KENNEL_RATE_LIMIT_PER_SECOND": "0",
            **env,
        }
        if llm is not None:
            self.env.update(
                KENNEL_MODEL="openai-chat:fake-model",
                OPENAI_BASE_URL=llm.base_url,
                OPENAI_API_KEY="k",
            )
        self.process: subprocess.Popen[bytes] | None = None

    def create_key(self, organization: str = "acme", email: str = "ada@acme.test") -> str:
        result = subprocess.run(
            [str(KENNEL), "keys", "create", "--org", organization, "--user", email],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=180,
        )
        return result.stdout.strip().splitlines()[-1]

    def start(self) -> KennelServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(KENNEL), "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self, seconds: float = 90) -> None:
        # Generous: starting Python and importing the providers takes 15 s and more when the
        # machine is busy.

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"kennel serve exited:\n{self.log.read_text()}")
            try:
                httpx.get(f"{self.base_url}/api/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"kennel serve did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, exactly like a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
