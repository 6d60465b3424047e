"""`tools.sql_statements`: an SQL text cut into statements as SQLite reads them."""

from __future__ import annotations

from instance_runtime.tools.sql_statements import is_blank, split_statements


def test_statements_are_cut_at_semicolons_outside_strings_and_comments() -> None:
    assert split_statements("select 1; select ';' ;\n-- a; comment\nselect \"x;y\"") == [
        "select 1",
        "select ';'",
        '-- a; comment\nselect "x;y"',
    ]


def test_trigger_bodies_stay_whole() -> None:
    text = "create trigger t after insert on a begin select 1; select 2; end; select 3"
    assert split_statements(text) == [
        "create trigger t after insert on a begin select 1; select 2; end",
        "select 3",
    ]


def test_blank_pieces_are_dropped() -> None:
    assert split_statements(";; select 1; -- the end\n; /* c */") == ["select 1"]
    assert split_statements("-- nothing") == []
    assert split_statements("select 'unterminated") == ["select 'unterminated"]


def test_is_blank() -> None:
    assert is_blank(" \n-- x\n/* y */ ")
    assert is_blank("/* unterminated")
    assert not is_blank("-- x\nselect 1")
