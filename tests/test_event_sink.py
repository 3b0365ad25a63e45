"""The event sink batches a run's chunks and always stops when the run closes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kennel.services import turns
from kennel.services.turns import EventSink


def _recording_sink(
    is_watched: Callable[[], bool] = lambda: True,
) -> tuple[EventSink, list[list[str]]]:
    """A sink whose writes are recorded, batch by batch."""
    appended: list[list[str]] = []

    async def append(bodies: list[str]) -> None:
        appended.append(bodies)

    return EventSink(append, is_watched), appended


async def _settle() -> None:
    """Let the flusher do whatever it would do now."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _written(appended: list[list[str]], batches: int) -> None:
    """Until `batches` batches are written (at most a second)."""
    async with asyncio.timeout(1):
        while len(appended) < batches:
            await asyncio.sleep(0)


async def test_batches_reach_the_log_and_the_rest_is_left_for_the_final_write() -> None:
    sink, appended = _recording_sink()
    flusher = asyncio.create_task(sink.run())
    sink.emit({"type": "start"})
    sink.emit({"type": "start-step"})
    await asyncio.sleep(turns.FLUSH_SECONDS * 3)
    sink.emit({"type": "finish"})
    rest = sink.close()
    await asyncio.wait_for(flusher, 1)
    assert appended == [['{"type":"start"}', '{"type":"start-step"}']]
    assert rest == ['{"type":"finish"}']


async def test_a_chunk_after_a_quiet_spell_is_written_at_once() -> None:
    """The model's first token, after it thought for a while, reaches readers without waiting
    for a batch to fill; what follows close behind waits for the next write."""
    sink, appended = _recording_sink()
    flusher = asyncio.create_task(sink.run())
    sink.emit({"type": "start"})
    await asyncio.sleep(turns.FLUSH_SECONDS * 3)
    assert appended == [['{"type":"start"}']]
    sink.emit({"type": "text-start", "id": "t"})
    await asyncio.sleep(turns.FLUSH_SECONDS / 5)
    assert appended[1:] == [['{"type":"text-start","id":"t"}']]
    sink.emit({"type": "text-delta", "id": "t", "delta": "a"})
    sink.emit({"type": "text-delta", "id": "t", "delta": "b"})
    await asyncio.sleep(turns.FLUSH_SECONDS / 5)
    assert len(appended) == 2  # too soon after the last write
    await asyncio.sleep(turns.FLUSH_SECONDS * 2)
    assert len(appended) == 3 and len(appended[2]) == 2
    assert sink.close() == []
    await asyncio.wait_for(flusher, 1)


async def test_the_answers_first_chunk_is_written_at_once_inside_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quick model's first token reaches readers at once, not when the batching window or
    the run ends; the stream's preamble alone waits, and so does what follows the token."""
    monkeypatch.setattr(turns, "FLUSH_SECONDS", 60.0)
    sink, appended = _recording_sink()
    flusher = asyncio.create_task(sink.run())
    sink.emit({"type": "start"})
    sink.emit({"type": "start-step"})
    await _settle()
    assert appended == []
    sink.emit({"type": "text-start", "id": "t"})
    sink.emit({"type": "text-delta", "id": "t", "delta": "a"})
    await _written(appended, 1)
    assert appended == [
        [
            '{"type":"start"}',
            '{"type":"start-step"}',
            '{"type":"text-start","id":"t"}',
            '{"type":"text-delta","id":"t","delta":"a"}',
        ]
    ]
    sink.emit({"type": "text-delta", "id": "t", "delta": "b"})
    await _settle()
    assert len(appended) == 1
    assert sink.close() == ['{"type":"text-delta","id":"t","delta":"b"}']
    await asyncio.wait_for(flusher, 1)


async def test_each_steps_first_chunk_is_written_at_once_inside_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a tool call, the answer's first token reaches readers at once too: each step's
    first chunk ends the window, not only the run's first."""
    monkeypatch.setattr(turns, "FLUSH_SECONDS", 60.0)
    sink, appended = _recording_sink()
    flusher = asyncio.create_task(sink.run())

    sink.emit({"type": "start"})
    sink.emit({"type": "start-step"})
    sink.emit({"type": "tool-input-start", "toolCallId": "c", "toolName": "list_files"})
    await _written(appended, 1)
    sink.emit({"type": "tool-output-available", "toolCallId": "c", "output": []})
    sink.emit({"type": "finish-step"})
    await _settle()
    assert len(appended) == 1  # the rest of the step waits for the window
    sink.emit({"type": "start-step"})
    await _settle()
    assert len(appended) == 1  # so does the next step's preamble
    sink.emit({"type": "text-start", "id": "t"})
    await _written(appended, 2)
    assert [body[:30] for body in appended[1]] == [
        '{"type":"tool-output-available',
        '{"type":"finish-step"}',
        '{"type":"start-step"}',
        '{"type":"text-start","id":"t"}',
    ]
    sink.emit({"type": "text-delta", "id": "t", "delta": "a"})
    await _settle()
    assert len(appended) == 2
    assert sink.close() == ['{"type":"text-delta","id":"t","delta":"a"}']
    await asyncio.wait_for(flusher, 1)


@pytest.mark.parametrize("delay_steps", range(40))
async def test_closing_at_any_moment_stops_the_flusher(
    monkeypatch: pytest.MonkeyPatch, delay_steps: int
) -> None:
    """Closing right after the batching window ends must not leave the flusher waiting."""
    monkeypatch.setattr(turns, "FLUSH_SECONDS", 0.002)

    async def append(bodies: list[str]) -> None:
        await asyncio.sleep(0)

    sink = EventSink(append)
    flusher = asyncio.create_task(sink.run())
    sink.emit({"type": "start"})
    await asyncio.sleep(0.0001 * delay_steps)
    sink.close()
    await asyncio.wait_for(flusher, 1)


async def test_a_run_nobody_watches_keeps_everything_for_its_final_write() -> None:
    watched = False
    sink, appended = _recording_sink(lambda: watched)
    flusher = asyncio.create_task(sink.run())
    sink.emit({"type": "start"})
    await asyncio.sleep(turns.FLUSH_SECONDS * 3)
    assert appended == []
    watched = True
    sink.emit({"type": "start-step"})
    await asyncio.sleep(turns.FLUSH_SECONDS * 3)
    assert appended == [['{"type":"start"}', '{"type":"start-step"}']]
    assert sink.close() == []
    await asyncio.wait_for(flusher, 1)
