"""A revoked key answers 401 at its next request, whichever process revoked it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from kennelapp import Api
from server import KENNEL, KennelServer


async def test_a_key_revoked_by_the_service_is_refused_at_once(api: Api) -> None:
    key = await api.new_key("acme", "bob@acme.test")
    async with api.as_key(key) as bob:
        assert (await bob.get("/api/workers")).status_code == 200
        [listed] = [k for k in await api.kennel.services.keys.list_all() if k.prefix == key[:12]]
        assert listed.last_used_at is not None

        await api.kennel.services.keys.revoke(key[:12])
        refused = await bob.get("/api/workers")
        assert refused.status_code == 401
        assert refused.json() == {"error": "invalid or revoked API key", "code": "unauthorized"}
    assert (await api.client.get("/api/workers")).status_code == 200


def test_a_key_revoked_from_the_command_line_stops_a_running_server(tmp_path: Path) -> None:
    server = KennelServer(tmp_path, None)
    key = server.create_key("acme", "ada@acme.test")
    server.start()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.base_url}/api/workers", headers=headers).status_code == 200
        revoke = subprocess.run(
            [str(KENNEL), "keys", "revoke", key[:12]],
            env={**os.environ, "KENNEL_DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert revoke.returncode == 0, revoke.stderr
        refused = httpx.get(f"{server.base_url}/api/workers", headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    finally:
        server.stop()
