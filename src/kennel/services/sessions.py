"""Dashboard sessions: a signed cookie bound to the API key that signed in.

The cookie holds the key's id (never the key) and a random CSRF token, signed with the
session secret. Every request looks the key up again, so revoking it ends its sessions at once.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from kennel.errors import AuthenticationError
from kennel.models import Session
from kennel.services.auth import AuthService

COOKIE_NAME = "kennel_session"
SECRET_FILE = "session-secret"  # noqa: S105 (a file name, not a secret)
_SALT = "kennel.dashboard.session"


def load_or_create_secret(data_dir: Path, configured: str | None) -> str:
    """The configured secret, else the one kept in the data folder (made on first use), so a
    restart keeps everyone signed in."""
    if configured:
        return configured
    path = data_dir / SECRET_FILE
    if path.is_file():
        kept = path.read_text().strip()
        if kept:
            return kept
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


class SessionService:
    def __init__(self, auth: AuthService, secret: str, max_age_seconds: float) -> None:
        self._auth = auth
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self._max_age = max_age_seconds

    @property
    def max_age_seconds(self) -> int:
        return int(self._max_age)

    async def sign_in(self, key: str) -> tuple[str, Session]:
        """A session for an API key: the cookie value and what it stands for."""
        principal = await self._auth.authenticate(f"Bearer {key.strip()}")
        csrf_token = secrets.token_urlsafe(24)
        cookie = self._serializer.dumps({"k": principal.key_id, "c": csrf_token})
        return cookie, Session(principal, csrf_token)

    async def session(self, cookie: str | None) -> Session:
        """The session a cookie stands for, if its signature holds, it has not expired and its
        key is still active."""
        if not cookie:
            raise AuthenticationError("not signed in")
        try:
            payload = self._serializer.loads(cookie, max_age=int(self._max_age))
        except BadSignature:
            raise AuthenticationError("the session is invalid or has expired") from None
        if not isinstance(payload, dict):
            raise AuthenticationError("the session is invalid")
        key_id, csrf_token = payload.get("k"), payload.get("c")
        if not isinstance(key_id, str) or not isinstance(csrf_token, str):
            raise AuthenticationError("the session is invalid")
        principal = await self._auth.principal_for_key(key_id)
        return Session(principal, csrf_token)


def is_valid_csrf(session: Session, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(session.csrf_token, token)
