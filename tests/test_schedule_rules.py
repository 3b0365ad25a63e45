"""The pure rules of schedules: cron timing across DST changes, dates, zones, cron syntax."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kennel.errors import InvalidInputError
from kennel.services.schedules import check_cron, next_cron_run, parse_date, zone_named

MADRID = ZoneInfo("Europe/Madrid")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # Spring: 2026-03-29 02:00 CET becomes 03:00 CEST (01:00Z).
        ("0 9 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 7)),
        ("0 9 * * *", utc(2026, 3, 27, 12), utc(2026, 3, 28, 8)),
        ("30 2 * * *", utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1)),  # skipped: end of gap
        ("0 * * * *", utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1)),
        # Autumn: 2026-10-25 03:00 CEST becomes 02:00 CET (01:00Z); 02:xx happens twice.
        ("0 9 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 25, 8)),
        ("30 2 * * *", utc(2026, 10, 25, 0, 10), utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", utc(2026, 10, 25, 0, 45), utc(2026, 10, 26, 1, 30)),  # once, not twice
        ("30 1-3 * * *", utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 2, 30)),
        ("30 * * * *", utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 1, 30)),  # hourly: both
        ("@daily", utc(2026, 10, 24, 12), utc(2026, 10, 24, 22)),
    ],
)
def test_cron_keeps_wall_clock_time_across_dst(
    expression: str, after: datetime, expected: datetime
) -> None:
    assert next_cron_run(expression, MADRID, after) == expected


def test_cron_runs_strictly_after_the_given_instant() -> None:
    assert next_cron_run("0 9 * * *", UTC, utc(2026, 5, 11, 9)) == utc(2026, 5, 12, 9)
    assert next_cron_run("*/15 * * * *", UTC, utc(2026, 5, 11, 9, 7)) == utc(2026, 5, 11, 9, 15)


def test_a_cron_that_never_fires_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="never fires"):
        next_cron_run("0 0 31 2 *", UTC, utc(2026, 5, 11))


@pytest.mark.parametrize(
    "expression", ["0 9 * * 1-5", "*/5 * * * *", "@daily", "@hourly", "@weekly", "0 0 L * *"]
)
def test_valid_crons(expression: str) -> None:
    assert check_cron(expression) == expression


def test_cron_whitespace_is_normalised() -> None:
    assert check_cron("  0  9 * *\t1-5 ") == "0 9 * * 1-5"


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "0 * * * * *", "0 0 * * * * 2030", "61 * * * *", "@reboot"]
)
def test_invalid_crons(expression: str) -> None:
    with pytest.raises(InvalidInputError):
        check_cron(expression)


def test_dates() -> None:
    assert parse_date("2030-01-02T03:04:05Z", UTC) == utc(2030, 1, 2, 3, 4, 5)
    assert parse_date("2030-01-02T03:04:05+01:00", MADRID) == utc(2030, 1, 2, 2, 4, 5)
    assert parse_date("2030-07-01T09:00:00", MADRID) == utc(2030, 7, 1, 7)
    assert parse_date("2030-07-01T09:00:00", UTC) == utc(2030, 7, 1, 9)
    with pytest.raises(InvalidInputError, match="ISO-8601"):
        parse_date("July 1st", UTC)


def test_zones() -> None:
    assert zone_named("Europe/Madrid") == MADRID
    assert zone_named("UTC") == ZoneInfo("UTC")
    for name in ("Mars/Olympus", "europe/madrid", "", "../../etc/passwd", "CEST"):
        with pytest.raises(InvalidInputError, match="IANA"):
            zone_named(name)
