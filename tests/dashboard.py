"""An in-process dashboard client: signs in with a key and posts forms as the pages do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from kennelapp import Api

ORIGIN = "http://kennel.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Browser:
    """A cookie-keeping client of the dashboard, like one browser tab."""

    client: httpx.AsyncClient
    csrf: str = ""

    async def sign_in(self, key: str, target: str = "/") -> httpx.Response:
        response = await self.client.post(
            "/signin", data={"key": key, "next": target}, headers={"origin": ORIGIN}
        )
        if response.status_code == 303:
            await self.get("/")
        return response

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.get(path, **kwargs)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        origin: str | None = ORIGIN,
        csrf: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"origin": origin} if origin else {}
        form = {"csrf_token": self.csrf if csrf is None else csrf, **(data or {})}
        return await self.client.post(path, data=form, headers=headers, **kwargs)


def browser(api: Api) -> Browser:
    """A signed-out tab on the in-process app of `api`."""
    return Browser(httpx.AsyncClient(transport=api.client._transport, base_url=ORIGIN, timeout=30))


async def signed_in(api: Api, key: str | None = None) -> Browser:
    tab = browser(api)
    response = await tab.sign_in(key or api.key)
    assert response.status_code == 303, response.text
    return tab
