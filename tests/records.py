"""Domain records for storage tests: workers built in memory or stored in a real store."""

from __future__ import annotations

from dataclasses import replace

from conftest import FakeClock
from kennel import ids
from kennel.models import Visibility, Worker
from kennel.storage import Store


def worker_record(org_id: str, user_id: str, clock: FakeClock, **changes: object) -> Worker:
    worker = Worker(
        id=ids.worker_id(),
        organization_id=org_id,
        user_id=user_id,
        title="Rex",
        instructions="Be helpful.",
        summary="",
        output_schema=None,
        visibility=Visibility.PUBLIC,
        model=None,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    return replace(worker, **changes)


async def stored_worker(
    store: Store, clock: FakeClock, email: str = "ada@example.com", **changes: object
) -> Worker:
    """A worker of `email` (a member of organization acme, created if new), stored."""
    org, user = await store.auth.ensure_member("acme", email, clock.now())
    worker = worker_record(org.id, user.id, clock, **changes)
    await store.workers.create(worker)
    return worker
