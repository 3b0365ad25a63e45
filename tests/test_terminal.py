"""Tables for the terminal: untrusted text is made inert, columns line up."""

from __future__ import annotations

from kennel.terminal import inert, render_table, width


def test_control_format_and_bidi_characters_are_replaced() -> None:
    cleaned = "Rex\ufffd[2J\ufffd\ufffdnext\ufffdgnp.exe\ufffd"
    assert inert("Rex\x1b[2J\r\nnext\u202egnp.exe\x00") == cleaned
    assert inert("Ünïcode 漢字 ok") == "Ünïcode 漢字 ok"


def test_long_values_are_cut_with_an_ellipsis() -> None:
    assert inert("x" * 60) == "x" * 47 + "…"
    assert inert("abcdef", limit=4) == "abc…"


def test_columns_line_up_with_wide_characters_and_numbers_on_the_right() -> None:
    assert width("漢字a") == 5 and width("e\u0301") == 1
    table = render_table(["NAME", "CREDITS"], [["漢字", "7"], ["rex\x07", "1500"]], right=[1])
    assert table.splitlines() == [
        "NAME  CREDITS",
        "漢字        7",
        "rex\ufffd     1500",
    ]
