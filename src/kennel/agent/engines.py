"""The long-lived engines behind the web and Python tools, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kennel.agent.toolbox import CodeRunner, Fetcher, Searcher
from kennel.agent.tools.sandbox import Sandbox
from kennel.agent.tools.web import WebFetcher, WebSearch
from kennel.config import Settings

logger = logging.getLogger(__name__)


@dataclass
class Engines:
    """What the web and sandbox tools run on; a missing engine means its tool is not offered."""

    search: Searcher | None = None
    fetcher: Fetcher | None = None
    sandbox: CodeRunner | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Engines:
        """Web search and fetch always; the sandbox when `bwrap` works here (says why not)."""
        sandbox: Sandbox | None = None
        if settings.sandbox_enabled:
            sandbox = Sandbox(settings)
            if not sandbox.available:
                logger.warning("run_python is not offered: %s", sandbox.unavailable_reason)
                sandbox = None
        else:
            logger.info("run_python is not offered: KENNEL_SANDBOX_ENABLED is off")
        return cls(WebSearch(settings), WebFetcher(settings), sandbox)

    async def aclose(self) -> None:
        for engine in (self.search, self.fetcher):
            if isinstance(engine, WebSearch | WebFetcher):
                await engine.aclose()
