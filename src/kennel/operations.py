"""The composition root of the commands that only need the database: keys, credits, usage,
migrations. It builds no web app, runner, model or tool, so those commands start fast."""

from __future__ import annotations

from dataclasses import dataclass

from kennel.clock import Clock, SystemClock
from kennel.config import Settings
from kennel.services.auth import AuthService
from kennel.services.keys import KeyService
from kennel.services.organizations import OrganizationService
from kennel.services.usage import UsageService
from kennel.storage import Store


@dataclass(frozen=True, slots=True)
class Operations:
    """What operators' commands use: the store and its services, without the runner, models,
    tools or mail, so that a command starts fast and quietly."""

    store: Store
    auth: AuthService
    keys: KeyService
    organizations: OrganizationService
    usage: UsageService


def build_operations(settings: Settings, clock: Clock | None = None) -> Operations:
    clock = clock or SystemClock()
    store = Store.for_settings(settings)
    return Operations(
        store,
        AuthService(store, clock),
        KeyService(store, clock),
        OrganizationService(store),
        UsageService(store, clock),
    )
