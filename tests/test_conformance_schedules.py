"""Schedules and webhooks through the official SDK 0.18 against a real `kennel serve`
(spec §3.6-3.9, §4.6-4.8, §16.5, §16.13-16.14).

The server allows `http://` webhook URLs and the loopback address of the local receiver that
stands in for a customer's endpoint; every other private address stays refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import handinger
import pytest
from handinger.types import Task, Worker
from handinger.types.workers import (
    ScheduleCancelResponse,
    ScheduleListResponse,
    Webhook,
    WebhookExecution,
    WebhookExecutionList,
)
from handinger.types.workers.worker_schedule import (
    CronWorkerSchedule,
    DelayedWorkerSchedule,
    IntervalWorkerSchedule,
    ScheduledWorkerSchedule,
)

from conformance import (
    ID,
    Kennel,
    is_iso,
    listing,
    new_task_id,
    poll_task,
    refusal,
    running_kennel,
)
from fakellm import FakeLLM
from receiver import HOST as RECEIVER_HOST
from receiver import Receiver, serving_receiver

pytestmark = pytest.mark.timeout(30)

LATER = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as found:
        yield found


@pytest.fixture(scope="module")
def kennel(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[Kennel]:
    folder = tmp_path_factory.mktemp("schedules")
    with running_kennel(folder, llm, KENNEL_ALLOW_PRIVATE_NETWORKS=f"{RECEIVER_HOST}/32") as found:
        yield found


def eventually(what: str, read: Callable[[], Any], seconds: float = 10) -> Any:
    """The first truthy result of `read`, polled until the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = read()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {seconds} s")


# ---------------------------------------------------------------------------------------------
# Schedules


def test_each_kind_of_schedule_is_created_and_listed(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    schedules = ada.workers.schedules
    before = datetime.now(UTC) - timedelta(seconds=1)

    cron = schedules.create(
        worker.id, input="Weekday digest", when={"type": "cron", "cron": "0 9 * * 1-5"}
    )
    assert isinstance(cron, CronWorkerSchedule)
    assert ID.fullmatch(cron.id) and cron.id.startswith("sch_")
    assert (cron.type, cron.cron, cron.input, cron.budget) == (
        "cron",
        "0 9 * * 1-5",
        "Weekday digest",
        "standard",
    )
    assert cron.next_run_at.utcoffset() == timedelta(0) and cron.next_run_at > before
    assert (cron.next_run_at.weekday() < 5, cron.next_run_at.hour, cron.next_run_at.minute) == (
        True,
        9,
        0,
    )

    raw = schedules.with_raw_response.create(
        worker.id,
        input="Hourly check",
        when={"type": "interval", "interval_seconds": 3600},
        budget="low",
    )
    assert json.loads(raw.http_request.content) == {
        "input": "Hourly check",
        "when": {"type": "interval", "intervalSeconds": 3600},
        "budget": "low",
    }
    interval = raw.parse()
    assert isinstance(interval, IntervalWorkerSchedule)
    assert (interval.interval_seconds, interval.budget) == (3600, "low")
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert before + timedelta(hours=1) <= interval.next_run_at <= after + timedelta(hours=1)

    delayed = schedules.create(
        worker.id,
        input="Remind me",
        when={"type": "delayed", "delay_in_seconds": 600},
        budget="high",
    )
    assert isinstance(delayed, DelayedWorkerSchedule)
    assert (delayed.delay_in_seconds, delayed.budget) == (600, "high")
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert before + timedelta(minutes=10) <= delayed.next_run_at <= after + timedelta(minutes=10)

    raw_once = schedules.with_raw_response.create(
        worker.id, input="New year report", when={"type": "scheduled", "date": LATER}
    )
    assert json.loads(raw_once.http_request.content)["when"] == {
        "type": "scheduled",
        "date": "2030-01-02T03:04:05+00:00",
    }
    once = raw_once.parse()
    assert isinstance(once, ScheduledWorkerSchedule) and once.next_run_at == LATER

    listed = schedules.list(worker.id)
    assert isinstance(listed, ScheduleListResponse) and listed.worker_id == worker.id
    created = [cron, interval, delayed, once]
    assert {s.id: type(s) for s in listed.schedules} == {s.id: type(s) for s in created}
    assert {s.id: s.model_dump() for s in listed.schedules} == {
        s.id: s.model_dump() for s in created
    }


def test_a_cancelled_schedule_leaves_the_list(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    schedules = ada.workers.schedules
    kept = schedules.create(worker.id, input="kept", when={"type": "cron", "cron": "@daily"})
    gone = schedules.create(worker.id, input="gone", when={"type": "cron", "cron": "@daily"})

    raw = schedules.with_raw_response.cancel(gone.id, worker_id=worker.id)
    assert raw.http_request.content == b""
    cancelled = raw.parse()
    assert isinstance(cancelled, ScheduleCancelResponse) and cancelled.cancelled is True
    assert [s.id for s in schedules.list(worker.id).schedules] == [kept.id]
    refusal(
        handinger.NotFoundError,
        404,
        "not_found",
        lambda: schedules.cancel(gone.id, worker_id=worker.id),
    )
    other = ada.workers.create()
    refusal(
        handinger.NotFoundError,
        404,
        "not_found",
        lambda: schedules.cancel(kept.id, worker_id=other.id),
    )


INVALID_SCHEDULES: dict[str, tuple[dict[str, Any], str]] = {
    "empty input": ({"input": "", "when": {"type": "cron", "cron": "@daily"}}, "input"),
    "no when": ({"input": "x"}, "when"),
    "unknown type": ({"input": "x", "when": {"type": "weekly"}}, "when"),
    "delay of zero": ({"input": "x", "when": {"type": "delayed", "delayInSeconds": 0}}, "delay"),
    "delay over a year": (
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": 31_536_001}},
        "delay",
    ),
    "interval of zero": (
        {"input": "x", "when": {"type": "interval", "intervalSeconds": 0}},
        "interval",
    ),
    "delay not an integer": (
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": "60"}},
        "delay",
    ),
    "empty cron": ({"input": "x", "when": {"type": "cron", "cron": ""}}, "cron"),
    "broken cron": ({"input": "x", "when": {"type": "cron", "cron": "every day"}}, "cron"),
    "date in the past": (
        {"input": "x", "when": {"type": "scheduled", "date": "2001-01-01T00:00:00+00:00"}},
        "past",
    ),
    "not a date": ({"input": "x", "when": {"type": "scheduled", "date": "soon"}}, "date"),
    "unknown budget": (
        {"input": "x", "when": {"type": "cron", "cron": "@daily"}, "budget": "huge"},
        "budget",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_SCHEDULES))
def test_invalid_schedules_are_400(ada: handinger.Handinger, case: str) -> None:
    body, fragment = INVALID_SCHEDULES[case]
    worker = ada.workers.create()
    path = f"/api/workers/{worker.id}/schedules"
    message = refusal(
        handinger.BadRequestError,
        400,
        "invalid_request",
        lambda: ada.post(path, cast_to=object, body=body),
    )
    assert fragment in message
    assert ada.workers.schedules.list(worker.id).schedules == []


def test_schedules_follow_worker_visibility(
    ada: handinger.Handinger, bob: handinger.Handinger, eve: handinger.Handinger
) -> None:
    public, private = ada.workers.create(), ada.workers.create(visibility="private")
    when: Any = {"type": "cron", "cron": "@daily"}
    mine = ada.workers.schedules.create(private.id, input="private digest", when=when)

    for call in (
        lambda: eve.workers.schedules.create(public.id, input="x", when=when),
        lambda: eve.workers.schedules.list(public.id),
        lambda: bob.workers.schedules.create(private.id, input="x", when=when),
        lambda: bob.workers.schedules.list(private.id),
        lambda: bob.workers.schedules.cancel(mine.id, worker_id=private.id),
    ):
        refusal(handinger.NotFoundError, 404, "not_found", call)
    assert [s.id for s in ada.workers.schedules.list(private.id).schedules] == [mine.id]

    ada.workers.delete(private.id)
    refusal(
        handinger.NotFoundError, 404, "not_found", lambda: ada.workers.schedules.list(private.id)
    )


def test_a_delayed_schedule_runs_a_task_once_then_leaves_the_list(
    ada: handinger.Handinger, llm: FakeLLM
) -> None:
    worker = ada.workers.create()
    ada.workers.schedules.create(
        worker.id, input="scheduled hello", when={"type": "delayed", "delay_in_seconds": 1}
    )

    task = eventually(
        "scheduled task", lambda: listing(ada, "/api/tasks", workerId=worker.id)["data"]
    )[0]
    assert task["triggeredBy"] == "schedule"
    done = poll_task(ada, task["id"])
    assert done.task.triggered_by == "schedule" and done.task.status == "completed"
    assert [(t.input, t.output_text) for t in done.turns] == [
        ("scheduled hello", "echo: scheduled hello")
    ]
    assert ada.workers.schedules.list(worker.id).schedules == []
    assert ada.workers.retrieve(worker.id).metadata["triggeredBy"] == "schedule"


# ---------------------------------------------------------------------------------------------
# Webhooks


def test_the_webhook_lifecycle(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    webhooks = ada.workers.webhooks
    assert webhooks.retrieve(worker.id) == Webhook(token=None, url=None)

    raw = webhooks.with_raw_response.update(worker.id, url="https://hooks.example.test/a")
    assert json.loads(raw.http_request.content) == {"url": "https://hooks.example.test/a"}
    first = raw.parse()
    assert isinstance(first, Webhook) and first.url == "https://hooks.example.test/a"
    assert first.token and first.token.startswith("whk_")

    moved = webhooks.update(worker.id, url="http://hooks.example.test/b")
    assert (moved.url, moved.token) == ("http://hooks.example.test/b", first.token)
    assert webhooks.retrieve(worker.id) == moved

    raw_token = webhooks.with_raw_response.regenerate_token(worker.id)
    assert raw_token.http_request.content == b""
    renewed = raw_token.parse()
    assert renewed.url == moved.url and renewed.token and renewed.token != moved.token

    raw_clear = webhooks.with_raw_response.update(worker.id, url=None)
    assert json.loads(raw_clear.http_request.content) == {"url": None}
    assert raw_clear.parse() == Webhook(token=None, url=None)
    assert webhooks.retrieve(worker.id) == Webhook(token=None, url=None)
    refusal(handinger.NotFoundError, 404, "not_found", lambda: webhooks.regenerate_token(worker.id))

    again = webhooks.update(worker.id, url="https://hooks.example.test/c")
    assert again.token and again.token not in (first.token, renewed.token)
    assert webhooks.delete(worker.id) == Webhook(token=None, url=None)
    assert webhooks.retrieve(worker.id) == Webhook(token=None, url=None)
    assert webhooks.delete(worker.id) == Webhook(token=None, url=None)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.test/x",
        "hooks.example.test/x",
        "http://127.0.0.2/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        pytest.param("https://hooks.example.test/" + "a" * 2048, id="longer than 2048"),
    ],
)
def test_unsafe_webhook_urls_are_400(ada: handinger.Handinger, url: str) -> None:
    worker = ada.workers.create()
    kept = ada.workers.webhooks.update(worker.id, url="https://hooks.example.test/kept")
    refusal(
        handinger.BadRequestError,
        400,
        "invalid_webhook_url",
        lambda: ada.workers.webhooks.update(worker.id, url=url),
    )
    assert ada.workers.webhooks.retrieve(worker.id) == kept


def test_a_webhook_update_needs_the_url_key(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    path = f"/api/workers/{worker.id}/webhook"
    refusal(
        handinger.BadRequestError,
        400,
        "invalid_request",
        lambda: ada.put(path, cast_to=Webhook, body={}),
    )


def test_only_the_creator_sees_and_sets_the_webhook(
    ada: handinger.Handinger, bob: handinger.Handinger, eve: handinger.Handinger
) -> None:
    worker = ada.workers.create()
    configured = ada.workers.webhooks.update(worker.id, url="https://hooks.example.test/ada")

    def calls(client: handinger.Handinger) -> list[Callable[[], object]]:
        webhooks = client.workers.webhooks
        return [
            lambda: webhooks.retrieve(worker.id),
            lambda: webhooks.update(worker.id, url="https://hooks.example.test/mine"),
            lambda: webhooks.delete(worker.id),
            lambda: webhooks.regenerate_token(worker.id),
            lambda: webhooks.list_executions(worker.id),
        ]

    for call in calls(bob):
        refusal(handinger.PermissionDeniedError, 403, "forbidden", call)
    for call in calls(eve):
        refusal(handinger.NotFoundError, 404, "not_found", call)
    assert ada.workers.webhooks.retrieve(worker.id) == configured


def test_the_delivery_log_is_paged(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    first = ada.workers.webhooks.list_executions(worker.id)
    assert isinstance(first, WebhookExecutionList)
    assert (first.logs, first.page, first.page_count, first.total_count) == ([], 1, 1, 0)

    raw = ada.workers.webhooks.with_raw_response.list_executions(worker.id, page=3)
    assert raw.http_request.url.params["page"] == "3"
    third = raw.parse()
    assert (third.logs, third.page, third.total_count) == ([], 3, 0)
    refusal(
        handinger.BadRequestError,
        400,
        "invalid_request",
        lambda: ada.workers.webhooks.list_executions(worker.id, page=0),
    )


def test_an_out_of_range_delivery_log_page_is_400(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    refusal(
        handinger.BadRequestError,
        400,
        "invalid_request",
        lambda: ada.workers.webhooks.list_executions(worker.id, page=10**20),
    )


def test_a_finished_task_is_delivered_signed_and_logged(
    ada: handinger.Handinger, receiver: Receiver
) -> None:
    worker = ada.workers.create()
    url = receiver.endpoint()
    hook = ada.workers.webhooks.update(worker.id, url=url)
    assert hook.token is not None
    task_id = new_task_id()
    result = ada.tasks.create(input="report to the hook", worker_id=worker.id, task_id=task_id)

    delivery = receiver.wait_for(url)
    assert delivery.headers["x-handinger-token"] == hook.token
    assert delivery.headers["content-type"].startswith("application/json")
    signed = f"{delivery.headers['webhook-id']}.{delivery.headers['webhook-timestamp']}."
    digest = hmac.new(hook.token.encode(), signed.encode() + delivery.body, hashlib.sha256)
    expected = "v1," + base64.b64encode(digest.digest()).decode()
    assert expected in delivery.headers["webhook-signature"].split()
    body = json.loads(delivery.body)
    assert body["type"] == "task.completed" and is_iso(body["createdAt"])
    task = Task.model_validate(body["data"]["task"])
    assert (task.id, task.worker_id, task.status) == (task_id, worker.id, "completed")
    delivered = Worker.model_validate(body["data"]["worker"])
    assert delivered.output_text == result.output_text == "echo: report to the hook"

    log = eventually(
        "logged delivery", lambda: ada.workers.webhooks.list_executions(worker.id).logs
    )
    [execution] = log
    assert isinstance(execution, WebhookExecution) and execution.id.startswith("whe_")
    assert (execution.request_status, execution.response_status, execution.error_message) == (
        "success",
        200,
        None,
    )
    assert (execution.task_id, execution.task_title) == (task_id, result.metadata["taskTitle"])
    assert (execution.url, execution.worker_id) == (url, worker.id)
    assert execution.duration_ms >= 0 and execution.created_at.utcoffset() == timedelta(0)


def test_a_refused_delivery_is_logged_as_an_error(
    ada: handinger.Handinger, receiver: Receiver
) -> None:
    worker = ada.workers.create()
    url = receiver.endpoint(status=500)
    ada.workers.webhooks.update(worker.id, url=url)
    task_id = new_task_id()
    ada.tasks.create(input="report to a broken hook", worker_id=worker.id, task_id=task_id)

    receiver.wait_for(url)
    newest = eventually(
        "logged delivery", lambda: ada.workers.webhooks.list_executions(worker.id).logs
    )[0]
    assert (newest.request_status, newest.response_status) == ("error", 500)
    assert newest.error_message and newest.task_id == task_id
