"""Settings: one frozen object built from `KENNEL_*` variables by the entrypoint."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MB = 1024 * 1024
RelaySecurity = Literal["plain", "starttls", "tls"]
RELAY_SCHEMES: dict[str, tuple[int, RelaySecurity]] = {
    "smtp": (25, "plain"),
    "smtp+starttls": (587, "starttls"),
    "smtps": (465, "tls"),
}


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """Where replies are sent: `smtp://` (plain), `smtp+starttls://` or `smtps://` (TLS)."""

    host: str
    port: int
    security: RelaySecurity
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpRelay:
        """`smtp://[user:password@]host[:port]`; the port defaults to the scheme's."""
        parts = urlsplit(url)
        scheme = RELAY_SCHEMES.get(parts.scheme.lower())
        if scheme is None or not parts.hostname:
            raise ValueError(
                "expected smtp://[user:password@]host[:port] (or smtp+starttls://, smtps://)"
            )
        default_port, security = scheme
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class Settings(BaseSettings):
    """Every setting Kennel reads; docs/configuration.md documents each one (a test checks)."""

    model_config = SettingsConfigDict(env_prefix="KENNEL_", frozen=True, extra="ignore")

    data_dir: Path = Path(".kennel")
    database_url: str | None = None
    model: str | None = None
    public_url: str | None = None
    host: str = "127.0.0.1"
    access_log: bool = True
    port: int = Field(default=8000, ge=0, le=65535)
    email_domain: str = "kennel.localhost"
    smtp_port: int | None = Field(default=None, ge=0, le=65535)
    smtp_host: str = "127.0.0.1"
    smtp_max_bytes: int = Field(default=25 * MB, ge=1024)
    smtp_relay_url: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_max_attempts: int = Field(default=8, ge=1)
    smtp_retry_seconds: float = Field(default=60.0, gt=0)

    max_json_bytes: int = Field(default=1 * MB, ge=1024)
    max_upload_file_bytes: int = Field(default=25 * MB, ge=1)
    max_upload_request_bytes: int = Field(default=100 * MB, ge=1)

    runner_concurrency: int = Field(default=1000, ge=1)
    job_lease_seconds: float = Field(default=30.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    keepalive_seconds: float = Field(default=15.0, gt=0, le=20)
    cancel_grace_seconds: float = Field(default=5.0, gt=0)
    model_timeout_seconds: float = Field(default=300.0, gt=0)

    unlimited_max_requests: int = Field(default=200, ge=1)
    unlimited_max_tool_calls: int = Field(default=500, ge=0)
    unlimited_max_tokens: int = Field(default=5_000_000, ge=1)

    session_secret: str | None = Field(default=None, min_length=16)
    session_days: float = Field(default=14.0, gt=0)

    rate_limit_per_second: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    model_prices: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)

    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("KENNEL_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("KENNEL_OPENAI_API_KEY", "OPENAI_API_KEY")
    )

    webhook_allow_http: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_seconds: float = Field(default=15.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=86_400.0, gt=0)
    allow_private_networks: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()

    sandbox_enabled: bool = True
    sandbox_bwrap: str = "bwrap"
    sandbox_timeout_seconds: float = Field(default=60.0, gt=0)
    sandbox_cpu_seconds: int = Field(default=30, ge=1)
    sandbox_memory_mb: int = Field(default=1024, ge=64)
    sandbox_max_file_mb: int = Field(default=64, ge=1)
    sandbox_max_processes: int = Field(default=64, ge=1)
    sandbox_total_memory_mb: int = Field(default=2048, ge=64)
    sandbox_workspace_mb: int = Field(default=1024, ge=1)
    sandbox_user: str = Field(default="nobody", min_length=1)
    sandbox_output_bytes: int = Field(default=64 * 1024, ge=1024)

    web_timeout_seconds: float = Field(default=30.0, gt=0)
    web_fetch_max_bytes: int = Field(default=10 * MB, ge=1)
    web_fetch_max_redirects: int = Field(default=5, ge=0)
    web_fetch_max_chars: int = Field(default=50_000, ge=1)
    search_provider: Literal["ddgs", "brave", "tavily", "searxng"] = "ddgs"
    search_api_key: str | None = None
    searxng_url: str | None = None
    brave_search_url: str = "https://api.search.brave.com/res/v1/web/search"
    tavily_search_url: str = "https://api.tavily.com/search"

    @field_validator("model_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        """`gpt-4.1=2,claude-sonnet-4-5=3`: credit multiplier per model name."""
        if not isinstance(value, str):
            return value
        prices: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, factor = item.rpartition("=")
            if not sep or not name:
                raise ValueError(f"expected model=multiplier, got {item!r}")
            prices[name.strip()] = float(factor)
        return prices

    @field_validator("allow_private_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        """`10.0.0.0/8,127.0.0.1`: networks (or single addresses) Kennel may call although they
        are private, loopback or link-local (webhook URLs, spec §16.14)."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return tuple(ip_network(item, strict=False) for item in value)
        return value

    @field_validator("smtp_relay_url")
    @classmethod
    def _check_relay(cls, value: str | None) -> str | None:
        if value:
            SmtpRelay.parse(value)
        return value or None

    @model_validator(mode="after")
    def _check_search_provider(self) -> Self:
        """A provider that can't work fails at start, naming the missing setting."""
        if self.search_provider in ("brave", "tavily") and not self.search_api_key:
            raise ValueError(
                f"KENNEL_SEARCH_PROVIDER={self.search_provider} needs KENNEL_SEARCH_API_KEY"
            )
        if self.search_provider == "searxng" and not self.searxng_url:
            raise ValueError("KENNEL_SEARCH_PROVIDER=searxng needs KENNEL_SEARXNG_URL")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'kennel.db'}"

    @property
    def database_setting(self) -> str:
        """The setting that chose the database."""
        return "KENNEL_DATABASE_URL" if self.database_url else "KENNEL_DATA_DIR"

    @property
    def database_label(self) -> str:
        """The database as commands name it: its URL, with a SQLite file's absolute path and
        any password masked, and the setting that chose it."""
        source = self.database_setting
        try:
            url = make_url(self.resolved_database_url)
        except ArgumentError:
            return f"(not a database URL) (from {source})"
        if url.get_backend_name() == "sqlite" and url.database:  # a file: show where
            url = url.set(database=str(Path(url.database).resolve()))
        return f"{url.render_as_string(hide_password=True)} (from {source})"

    @property
    def base_url(self) -> str:
        """Public base of the URLs Kennel puts in responses (dashboard and file links)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def smtp_relay(self) -> SmtpRelay | None:
        return SmtpRelay.parse(self.smtp_relay_url) if self.smtp_relay_url else None

    @property
    def is_https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"
