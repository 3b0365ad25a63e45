"""The `kennel` command: first-start admin key, key creation, migrations."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from server import KENNEL, free_port


def _kennel(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KENNEL_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(KENNEL), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _serve_until_ready(data_dir: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    port = free_port()
    env = {**os.environ, "KENNEL_DATA_DIR": str(data_dir), "KENNEL_RATE_LIMIT_PER_SECOND": "0"}
    process = subprocess.Popen(
        [str(KENNEL), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/api/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    process.terminate()
    output, _ = process.communicate(timeout=15)
    return process, base_url, output.splitlines()


def test_first_serve_prints_one_admin_key_once(tmp_path: Path) -> None:
    _, _, first = _serve_until_ready(tmp_path)
    keys = [line.split("key: ", 1)[1] for line in first if "key: hdg_" in line]
    assert len(keys) == 1
    _, _, second = _serve_until_ready(tmp_path)
    assert not [line for line in second if "key: hdg_" in line]

    created = _kennel(tmp_path, "keys", "create", "--org", "acme", "--user", "bob@acme.test")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("hdg_")


def test_keys_create_refuses_a_bad_email(tmp_path: Path) -> None:
    result = _kennel(tmp_path, "keys", "create", "--org", "acme", "--user", "not-an-email")
    assert result.returncode != 0
    assert "not an e-mail address" in result.stderr


def test_migrate(tmp_path: Path) -> None:
    result = _kennel(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kennel.db").exists()


def test_a_second_server_on_the_same_sqlite_database_is_refused(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "KENNEL_DATA_DIR": str(tmp_path)}
    first = subprocess.Popen(
        [str(KENNEL), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        second = subprocess.run(
            [str(KENNEL), "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "another Kennel process is serving" in second.stdout + second.stderr
    finally:
        first.terminate()
        first.wait(timeout=15)
