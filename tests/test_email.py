"""Workers reachable by e-mail (issue 4, spec §16.6): real mail sent with `smtplib` to Kennel's
listener on 127.0.0.1, answers caught by a second local aiosmtpd acting as the relay."""

from __future__ import annotations

import asyncio
import os
import smtplib
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from conftest import FakeClock
from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennel.config import Settings, SmtpRelay
from kennel.mail.messages import strip_quoted
from kennel.storage.tables import jobs
from kennelapp import Api, kennel_api, new_worker, settings_for
from mailrelay import Relay, Relayed, free_port, mail, send, serving_relay
from prompts import listed, requests_for, user_parts
from server import python_lines

DOMAIN = "kennel.test"
ADA = "ada@acme.test"


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    with serving_relay() as serving:
        yield serving


def _settings(tmp_path: Path, llm: FakeLLM, relay_url: str, **overrides: Any) -> Any:
    return settings_for(
        tmp_path,
        llm,
        smtp_port=0,
        smtp_relay_url=relay_url,
        email_domain=DOMAIN,
        smtp_retry_seconds=10,
        **overrides,
    )


@pytest.fixture
async def mailed(
    tmp_path: Path, llm: FakeLLM, relay: Relay, clock: FakeClock, database_url: str
) -> AsyncIterator[Api]:
    """The app with its SMTP listener, on SQLite and on PostgreSQL."""
    relay.forget()
    settings = _settings(tmp_path, llm, relay.url, database_url=database_url)
    async with kennel_api(settings, clock) as api:
        yield api


async def _send(api: Api, message: EmailMessage, **options: Any) -> Any:
    assert api.kennel.smtp is not None
    return await asyncio.to_thread(send, api.kennel.smtp.port, message, **options)


async def _answer(relay: Relay, subject: str, count: int = 1) -> Relayed:
    """The `count`-th mail the relay got with this subject."""
    async with asyncio.timeout(15):
        while True:
            found = [m for m in relay.mails() if m.message["Subject"] == subject]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.02)


async def _tasks(api: Api, worker_id: str) -> list[Any]:
    response = await api.client.get("/api/tasks", params={"workerId": worker_id})
    assert response.status_code == 200, response.text
    tasks: list[Any] = response.json()["data"]
    return tasks


async def _turns(api: Api, task_id: str) -> list[Any]:
    response = await api.client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200, response.text
    turns: list[Any] = response.json()["turns"]
    return turns


async def _outbox(api: Api) -> list[tuple[str, int]]:
    """Status and attempts of each queued mail's job."""
    query = sa.select(jobs.c.status, jobs.c.attempts).where(jobs.c.kind == "mail")
    rows = await api.kennel.store.database.read(lambda conn: conn.execute(query).all())
    return [(row.status, row.attempts) for row in rows]


def _text(relayed: Relayed) -> str:
    body = relayed.message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content()).replace("\r\n", "\n")


async def test_a_mail_starts_a_task_and_its_answer_comes_back_threaded(
    mailed: Api, relay: Relay
) -> None:
    worker_id = await new_worker(mailed.client)
    sent = mail(
        ADA,
        f"{worker_id}@{DOMAIN}",
        "Weekly numbers",
        "Please add 2 and 3.\n\nOn Mon, 4 May 2026 at 10:00, Bob <bob@acme.test> wrote:\n"
        "> last week's thread\n> more of it\n",
    )
    await _send(mailed, sent)

    answer = await _answer(relay, "Re: Weekly numbers")
    [task] = await _tasks(mailed, worker_id)
    assert task["triggeredBy"] == "email"
    [turn] = await _turns(mailed, task["id"])
    assert turn["input"] == "Weekly numbers\n\nPlease add 2 and 3."

    reply = answer.message
    assert answer.rcpt_tos == [ADA]
    assert reply["To"] == ADA
    assert reply["From"].addresses[0].addr_spec == f"{worker_id}+{task['id']}@{DOMAIN}"
    assert answer.mail_from == f"{worker_id}+{task['id']}@{DOMAIN}"
    assert reply["In-Reply-To"] == sent["Message-ID"]
    assert reply["References"].split() == [sent["Message-ID"]]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Message-ID"].endswith(f"@{DOMAIN}>")
    assert _text(answer).strip() == "echo: Weekly numbers\n\nPlease add 2 and 3."


async def test_html_only_mail_becomes_plain_text_without_its_quoted_history(
    mailed: Api, relay: Relay
) -> None:
    worker_id = await new_worker(mailed.client)
    html = (
        "<html><body><p>Hello <b>Rex</b>,</p><p>summarise this page.</p>"
        "<blockquote><p>an old quoted message</p></blockquote></body></html>"
    )
    await _send(mailed, mail(ADA, f"{worker_id}@{DOMAIN}", "HTML please", None, html=html))

    await _answer(relay, "Re: HTML please")
    [task] = await _tasks(mailed, worker_id)
    [turn] = await _turns(mailed, task["id"])
    assert turn["input"] == "HTML please\n\nHello **Rex** ,\n\nsummarise this page."


async def test_attachments_land_in_the_workspace_and_in_worker_files(
    mailed: Api, relay: Relay, llm: FakeLLM
) -> None:
    worker_id = await new_worker(mailed.client)
    content = bytes(range(256)) * 40
    message = mail(
        ADA, f"{worker_id}@{DOMAIN}", "Data", "See attached.", files={"data.bin": content}
    )
    await _send(mailed, message)

    await _answer(relay, "Re: Data")
    [task] = await _tasks(mailed, worker_id)
    [turn] = await _turns(mailed, task["id"])
    # The input is what the mail says; the model is told about the attachment beside it.
    assert turn["input"] == "Data\n\nSee attached."
    [request] = requests_for(llm, turn["input"])
    assert listed(user_parts(request)[1]) == [
        {
            "name": "data.bin",
            "mediaType": "application/octet-stream",
            "sizeBytes": len(content),
            "path": "data.bin",
        }
    ]
    state = await mailed.client.get(f"/api/workers/{worker_id}", params={"taskId": task["id"]})
    files = state.json()["files"]
    assert [(f["filename"], f["size"]) for f in files] == [("data.bin", len(content))]
    download = await mailed.client.get(f"/api/workers/{worker_id}/files/data.bin")
    assert download.status_code == 200
    assert download.content == content


async def test_attachment_names_follow_the_workspace_rule(mailed: Api, relay: Relay) -> None:
    """A dotfile is an ordinary file, as when uploaded; a name the file system can't hold (an
    upload's 400) becomes `attachment-N`."""
    worker_id = await new_worker(mailed.client)
    files = {".upload-x": b"dot", "n" * 300 + ".txt": b"long"}
    await _send(mailed, mail(ADA, f"{worker_id}@{DOMAIN}", "Odd names", "See.", files=files))

    await _answer(relay, "Re: Odd names")
    [task] = await _tasks(mailed, worker_id)
    state = await mailed.client.get(f"/api/workers/{worker_id}", params={"taskId": task["id"]})
    stored = {f["filename"]: f["size"] for f in state.json()["files"]}
    assert stored == {".upload-x": 3, "attachment-2": 4}
    download = await mailed.client.get(f"/api/workers/{worker_id}/files/.upload-x")
    assert download.content == b"dot"


async def test_replies_continue_the_task_by_thread_and_by_plus_address(
    mailed: Api, relay: Relay
) -> None:
    worker_id = await new_worker(mailed.client)
    first = mail(ADA, f"{worker_id}@{DOMAIN}", "Plans", "First question")
    await _send(mailed, first)
    answer = await _answer(relay, "Re: Plans")
    [task] = await _tasks(mailed, worker_id)

    # A reply to the worker's answer, as a mail client writes it: to the plain address,
    # threaded by In-Reply-To alone.
    follow_up = mail(
        ADA,
        f"{worker_id}@{DOMAIN}",
        "Re: Plans",
        "Second question\n\n> echo: First question",
        headers={"In-Reply-To": answer.message["Message-ID"]},
    )
    await _send(mailed, follow_up)
    second = await _answer(relay, "Re: Plans", count=2)
    assert second.message["In-Reply-To"] == follow_up["Message-ID"]
    assert second.message["References"].split() == [follow_up["Message-ID"]]

    plussed = mail(ADA, f"{worker_id}+{task['id']}@{DOMAIN}", "Another thing", "Third question")
    await _send(mailed, plussed)
    await _answer(relay, "Re: Another thing")

    assert [t["id"] for t in await _tasks(mailed, worker_id)] == [task["id"]]
    turns = await _turns(mailed, task["id"])
    assert [t["input"] for t in turns] == [
        "Plans\n\nFirst question",
        "Second question",
        "Third question",
    ]
    assert "echo: Second question" in _text(second)


async def test_the_answer_carries_the_files_the_worker_wrote(
    mailed: Api, relay: Relay, llm: FakeLLM
) -> None:
    llm.script(
        "Write the report",
        tool_calls(ToolCall("write_file", {"path": "report.md", "content": "# Report\nall good"})),
        Text("Done: see report.md"),
    )
    worker_id = await new_worker(mailed.client)
    upload = {"brief.txt": b"the brief"}
    await _send(
        mailed, mail(ADA, f"{worker_id}@{DOMAIN}", "Report", "Write the report", files=upload)
    )

    answer = await _answer(relay, "Re: Report")
    assert _text(answer).strip() == "Done: see report.md"
    attached = {
        part.get_filename(): part.get_content() for part in answer.message.iter_attachments()
    }
    assert attached == {"report.md": "# Report\nall good"}


async def test_a_stranger_gets_a_polite_bounce_and_no_task(mailed: Api, relay: Relay) -> None:
    worker_id = await new_worker(mailed.client)
    sent = mail("eve@elsewhere.test", f"{worker_id}@{DOMAIN}", "Let me in", "Do my homework")
    await _send(mailed, sent)

    bounce = await _answer(relay, "Re: Let me in")
    assert bounce.rcpt_tos == ["eve@elsewhere.test"]
    assert bounce.mail_from == "<>"  # a bounce has a null return path: nothing answers it
    assert bounce.message["Auto-Submitted"] == "auto-replied"
    assert bounce.message["In-Reply-To"] == sent["Message-ID"]
    assert "allow-list" in _text(bounce)
    assert await _tasks(mailed, worker_id) == []


async def test_allow_listed_addresses_and_domains_may_write(mailed: Api, relay: Relay) -> None:
    worker_id = await new_worker(mailed.client, emailAllowList=["Carol@Partner.test"])
    await _send(mailed, mail("carol@partner.test", f"{worker_id}@{DOMAIN}", "From Carol", "Hi"))
    assert (await _answer(relay, "Re: From Carol")).rcpt_tos == ["carol@partner.test"]

    response = await mailed.client.patch(
        f"/api/workers/{worker_id}", json={"emailAllowList": ["@partner.test"]}
    )
    assert response.json()["emailAllowList"] == ["@partner.test"]
    await _send(mailed, mail("dave@partner.test", f"{worker_id}@{DOMAIN}", "From Dave", "Hi"))
    assert (await _answer(relay, "Re: From Dave")).rcpt_tos == ["dave@partner.test"]
    assert len(await _tasks(mailed, worker_id)) == 2


@pytest.mark.parametrize(
    ("headers", "envelope_from"),
    [
        ({"Auto-Submitted": "auto-replied"}, None),
        ({"Precedence": "bulk"}, None),
        ({"X-Autoreply": "yes"}, None),
        ({}, ""),
        ({}, "MAILER-DAEMON@mx.acme.test"),
    ],
    ids=["auto-submitted", "precedence", "x-autoreply", "null-sender", "mailer-daemon"],
)
async def test_automatic_mail_is_ignored(
    mailed: Api, relay: Relay, headers: dict[str, str], envelope_from: str | None
) -> None:
    worker_id = await new_worker(mailed.client)
    subject = f"Out of office {worker_id}"
    message = mail(ADA, f"{worker_id}@{DOMAIN}", subject, "I am away", headers=headers)
    await _send(mailed, message, envelope_from=envelope_from)

    assert await _tasks(mailed, worker_id) == []
    await asyncio.sleep(0.2)
    assert not [m for m in relay.mails() if subject in str(m.message["Subject"])]


async def test_mail_from_our_own_domain_is_ignored(mailed: Api) -> None:
    worker_id = await new_worker(mailed.client)
    other = await new_worker(mailed.client)
    await mailed.client.patch(
        f"/api/workers/{worker_id}", json={"emailAllowList": [f"{other}@{DOMAIN}"]}
    )
    await _send(mailed, mail(f"{other}@{DOMAIN}", f"{worker_id}@{DOMAIN}", "Loop", "ping"))
    assert await _tasks(mailed, worker_id) == []


async def test_unknown_workers_tasks_and_domains_are_refused_at_rcpt(mailed: Api) -> None:
    worker_id = await new_worker(mailed.client)
    for address in (
        f"wrk_nobodyhere123@{DOMAIN}",
        f"{worker_id}@elsewhere.test",
        f"{worker_id}+tsk_nosuchtask@{DOMAIN}",
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await _send(mailed, mail(ADA, address, "Hello", "Anyone?"))
        assert refused.value.recipients[address][0] == 550
    assert await _tasks(mailed, worker_id) == []


async def test_oversized_mail_is_refused_at_smtp_time(
    tmp_path: Path, llm: FakeLLM, relay: Relay
) -> None:
    settings = _settings(tmp_path, llm, relay.url, smtp_max_bytes=4096)
    async with kennel_api(settings) as api:
        worker_id = await new_worker(api.client)
        big = mail(ADA, f"{worker_id}@{DOMAIN}", "Big", "x", files={"big.bin": b"\0" * 8192})
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
            await _send(api, big)
        assert refused.value.smtp_code == 552
        small = mail(ADA, f"{worker_id}@{DOMAIN}", "Small", "x")
        await _send(api, small)
        assert len(await _tasks(api, worker_id)) == 1  # the limit let a small mail in


async def test_an_answer_waits_for_a_relay_that_is_down_and_goes_out_when_it_is_back(
    tmp_path: Path, llm: FakeLLM, clock: FakeClock
) -> None:
    port = free_port()
    settings = _settings(tmp_path, llm, f"smtp://127.0.0.1:{port}")
    async with kennel_api(settings, clock) as api:
        worker_id = await new_worker(api.client)
        await _send(api, mail(ADA, f"{worker_id}@{DOMAIN}", "Patience", "Wait for it"))

        async with asyncio.timeout(15):  # the first attempt failed; the next is backing off
            while await _outbox(api) != [("queued", 1)]:
                await asyncio.sleep(0.02)
        with serving_relay(port) as relay:
            assert await api.kennel.runner.work_due("mail") == 0  # not due yet
            clock.advance(10 * 1.2)  # the longest first wait, jitter included
            await api.kennel.runner.work_due("mail")  # (or the runner's loop, if it looks first)
            answer = await _answer(relay, "Re: Patience")
        assert "echo: Patience" in _text(answer)
        async with asyncio.timeout(15):  # sent: nothing waits
            while await _outbox(api) != [("done", 2)]:
                await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        ("Yes, go ahead.\n\nOn Tue, 5 May 2026, Rex <wrk_a@k.test> wrote:\n> Shall I?\n", None),
        ("Yes, go ahead.\n\n-----Original Message-----\nFrom: Rex\nSubject: Q\n\nShall I?", None),
        ("Yes, go ahead.\n> Shall I?\n> (quoted)", None),
        ("Yes, go ahead.\n\nAm 05.05.2026 um 10:00 schrieb Rex <wrk_a@k.test>:\n> Soll ich?", None),
        ("Line one\nline two", "Line one\nline two"),
    ],
    ids=["on-wrote", "outlook", "quoted-lines", "german", "nothing-quoted"],
)
def test_quoted_history_is_stripped(body: str, kept: str | None) -> None:
    assert strip_quoted(body) == (kept or "Yes, go ahead.")


def test_relay_urls_name_the_security_and_default_port() -> None:
    relay = SmtpRelay.parse("smtp+starttls://bot%40acme.test:s3cret@mail.acme.test")
    assert relay == SmtpRelay("mail.acme.test", 587, "starttls", "bot@acme.test", "s3cret")
    assert SmtpRelay.parse("smtp://127.0.0.1:2525") == SmtpRelay(
        "127.0.0.1", 2525, "plain", None, None
    )
    assert SmtpRelay.parse("smtps://mail.acme.test").port == 465
    with pytest.raises(ValidationError):
        Settings(smtp_relay_url="http://mail.acme.test")


async def test_allow_list_entries_must_be_addresses_or_domains(mailed: Api) -> None:
    response = await mailed.client.post(
        "/api/workers", json={"title": "Rex", "emailAllowList": ["not an address"]}
    )
    assert response.status_code == 400
    assert "emailAllowList" in response.json()["error"]


def test_a_server_without_a_mail_port_leaves_the_listener_unloaded(tmp_path: Path) -> None:
    """Without KENNEL_SMTP_PORT the listener's libraries (aiosmtpd, the parsers) stay out."""
    script = (
        "import sys\n"
        "from kennel.app import build\n"
        "from kennel.config import Settings\n"
        f"kennel = build(Settings(data_dir={str(tmp_path)!r}))\n"
        "print(kennel.smtp, 'aiosmtpd' in sys.modules, 'kennel.mail.smtp' in sys.modules)\n"
        f"kennel = build(Settings(data_dir={str(tmp_path)!r}, smtp_port=0))\n"
        "print(type(kennel.smtp).__name__, 'aiosmtpd' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KENNEL_")}
    assert python_lines(script, env) == ["None False False", "SmtpGateway True"]
