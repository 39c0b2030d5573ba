"""Outputs as values (dagd/core/outputs.py): the $DAGD_OUTPUT file format, what a Python step
may return, variable names and their collisions, the 64 KiB limit."""

from __future__ import annotations

import math

import pytest

from dagd.core.outputs import (
    MAX_OUTPUT_BYTES,
    OutputError,
    check_returned,
    encoded_size,
    env_text,
    output_environment,
    output_variable,
    parse_output_file,
)


def test_key_value_lines_keep_everything_after_the_first_equals_sign() -> None:
    data = b"count=3\nurl=https://x/?a=1&b=2\nempty=\n\n  \nspaced= yes \r\n"
    assert parse_output_file(data) == {
        "count": "3",
        "url": "https://x/?a=1&b=2",
        "empty": "",
        "spaced": " yes ",
    }


def test_a_key_with_a_space_is_refused_with_its_line_number() -> None:
    with pytest.raises(OutputError, match=r"line 2: key 'spaced ' is not a valid output name"):
        parse_output_file(b"ok=1\nspaced = yes\n")


def test_heredoc_values_span_lines_as_github_writes_them() -> None:
    data = (
        b"summary<<EOF\nfirst line\n\nkey=not a key\nEOF\n"
        b"other<<END_OF_IT\r\nx<<y\r\nEND_OF_IT\r\n"
        b"last=1"
    )
    assert parse_output_file(data) == {
        "summary": "first line\n\nkey=not a key",
        "other": "x<<y",
        "last": "1",
    }


def test_an_equals_sign_before_the_heredoc_marker_makes_a_plain_line() -> None:
    assert parse_output_file(b"expr=a<<b\n") == {"expr": "a<<b"}


def test_the_last_value_of_a_key_wins() -> None:
    assert parse_output_file(b"a=1\nb=2\na=3\n") == {"b": "2", "a": "3"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just text\n", "line 1: expected key=value or key<<DELIMITER"),
        (b"ok=1\nbad-key=2\n", "line 2: key 'bad-key' is not a valid output name"),
        (b"1x=2\n", "key '1x' is not a valid output name"),
        (b"=2\n", "key '' is not a valid output name"),
        (b"x<<EOF\nno end\n", "line 1: x<<EOF has no line 'EOF' to end it"),
        (b"x<<\nEOF\n", "line 1: x<< needs a delimiter"),
        (b"x=a\x00b\n", "the value of 'x' contains a NUL character"),
        (b"x=\xff\n", "the output file is not UTF-8 text"),
        (b"Name=1\nname=2\n", "keys 'Name' and 'name' differ only in case"),
        (b"x=" + b"a" * MAX_OUTPUT_BYTES, "over the limit of 65536"),
    ],
)
def test_bad_output_files_are_refused_saying_where(data: bytes, message: str) -> None:
    with pytest.raises(OutputError) as err:
        parse_output_file(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_file_of_exactly_the_limit_is_taken() -> None:
    data = b"x=" + b"a" * (MAX_OUTPUT_BYTES - 2)
    assert len(parse_output_file(data)["x"]) == MAX_OUTPUT_BYTES - 2


def test_a_python_mapping_keeps_json_values_as_json_reads_them() -> None:
    given = {"n": 3, "f": 1.5, "ok": True, "none": None, "items": (1, "a"), "obj": {"k": [1]}}
    assert check_returned(given) == {
        "n": 3,
        "f": 1.5,
        "ok": True,
        "none": None,
        "items": [1, "a"],
        "obj": {"k": [1]},
    }
    assert check_returned(None) is None
    assert check_returned({}) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "a Python step returns a mapping of outputs or None, not int"),
        (["a"], "not list"),
        ({"bad key": 1}, "key 'bad key' is not a valid output name"),
        ({1: "x"}, "key 1 is not a string"),
        ({"s": {1, 2}}, "the value of 's' is not JSON"),
        ({"x": math.nan}, "the value of 'x' is not JSON"),
        ({"x": "a\x00"}, "contains a NUL character"),
        ({"x": "\ud800"}, "not valid Unicode"),
        ({"A": 1, "a": 2}, "differ only in case"),
        ({"big": "é" * (MAX_OUTPUT_BYTES // 2)}, "over the limit of 65536"),
    ],
)
def test_what_a_python_step_may_not_return(value: object, message: str) -> None:
    with pytest.raises(OutputError) as err:
        check_returned(value)
    assert message in str(err.value)


def test_variable_names_are_upper_case_with_underscores() -> None:
    assert output_variable("fetch-data.v2", "rowCount") == "DAGD_OUTPUT_FETCH_DATA_V2_ROWCOUNT"
    assert output_variable("a", "b") == "DAGD_OUTPUT_A_B"


def test_values_reach_the_environment_as_text_or_compact_json() -> None:
    assert [env_text(v) for v in ("x y", 3, 1.5, True, None, [1, "é"], {"a": 1})] == [
        "x y",
        "3",
        "1.5",
        "true",
        "null",
        '[1,"é"]',
        '{"a":1}',
    ]


def test_output_environment_and_its_collisions() -> None:
    assert output_environment({"a": {"n": 1}, "b-c": {"x": "y"}}) == {
        "DAGD_OUTPUT_A_N": "1",
        "DAGD_OUTPUT_B_C_X": "y",
    }
    with pytest.raises(OutputError) as err:
        output_environment({"a_b": {"c": "1"}, "a-b": {"c": "2"}})
    assert str(err.value) == "outputs a_b.c and a-b.c would both be DAGD_OUTPUT_A_B_C: rename one"
    with pytest.raises(OutputError, match=r"outputs a\.b_c and a_b\.c"):
        output_environment({"a": {"b_c": "1"}, "a_b": {"c": "2"}})


def test_encoded_size_counts_utf8_bytes() -> None:
    assert encoded_size({"k": "é"}) == len('{"k":"é"}'.encode())
