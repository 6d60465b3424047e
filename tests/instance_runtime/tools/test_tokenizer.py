"""`tools/tokenizer`: PocketBase's own tokenizer scenarios (tools/tokenizer/tokenizer_test.go),
token for token and in order."""

from __future__ import annotations

import pytest

from instance_runtime.tools.tokenizer import UnbalancedError, tokenize

SCENARIOS: list[tuple[str, str, str, dict[str, bool], list[str]]] = [
    ("empty string", "", ",", {}, []),
    ("no separators", 'a, b, c, d, e 123, "abc"', "", {}, ['a, b, c, d, e 123, "abc"']),
    (
        "default separators",
        'a, b , c  , d e  , "a,b,  c  " , ,, ,\t  (123, 456)\n\t\t\t',
        ",",
        {},
        ["a", "b", "c", "d e", '"a,b,  c  "', "(123, 456)"],
    ),
    (
        "keep separators",
        'a, b, c, d  e, "a,b,  c  ",\t(123, 456)',
        ", ",
        {"keep_separator": True, "keep_empty": True},
        ["a,", " ", "b,", " ", "c,", " ", "d ", " ", "e,", " ", '"a,b,  c  ",', "(123, 456)"],
    ),
    (
        "custom separators",
        'a | b c  d &(e + f) &  "g & h" & & &',
        "|&",
        {},
        ["a", "b c  d", "(e + f)", '"g & h"'],
    ),
    (
        "ignoring parenthesis",
        "a, b, (c,d)",
        ",",
        {"ignore_parenthesis": True},
        ["a", "b", "(c", "d)"],
    ),
    (
        "keep empty tokens",
        "a, b, (c, d), ,, , e, , f",
        ",",
        {"keep_empty": True},
        ["a", "b", "(c, d)", "", "", "", "e", "", "f"],
    ),
    ("an escaped quote does not open", r"a\'b, c", ",", {}, [r"a\'b", "c"]),
    ("a stray closing parenthesis counts for nothing", "a), b", ",", {}, ["a)", "b"]),
]


@pytest.mark.parametrize(
    ("text", "separators", "options", "expected"),
    [s[1:] for s in SCENARIOS],
    ids=[s[0] for s in SCENARIOS],
)
def test_tokens_as_pocketbase_scans_them(
    text: str, separators: str, options: dict[str, bool], expected: list[str]
) -> None:
    assert tokenize(text, separators, **options) == expected


@pytest.mark.parametrize("text", ["(a,b() c", "'asd\"", "a, (b", "x, 'open"])
def test_an_unbalanced_text_is_refused(text: str) -> None:
    with pytest.raises(UnbalancedError):
        tokenize(text)
