import os

import pytest
from dotenvkit import DotenvError, load, parse


def test_simple():
    assert parse("A=1\nB=two\n") == {"A": "1", "B": "two"}


def test_blank_lines_and_comments():
    assert parse("\n# comment\n  \nA=1\n   # indented comment\n") == {"A": "1"}


def test_export_prefix():
    assert parse("export TOKEN=abc") == {"TOKEN": "abc"}


def test_spaces_around_equals():
    assert parse("A = hello world ") == {"A": "hello world"}


def test_inline_comment_unquoted():
    assert parse("A=value # note") == {"A": "value"}


def test_hash_inside_unquoted_word_kept():
    assert parse("COLOR=#fff") == {"COLOR": "#fff"}


def test_single_quotes_are_literal():
    assert parse("A='${B} \\n'") == {"A": "${B} \\n"}


def test_double_quote_escapes():
    assert parse('A="line1\\nline2\\t\\"q\\""') == {"A": 'line1\nline2\t"q"'}


def test_quoted_value_with_comment_after():
    assert parse('A="x # not a comment" # a comment') == {"A": "x # not a comment"}


def test_multiline_double_quoted():
    assert parse('KEY="-----BEGIN\nabc\n-----END"\nNEXT=1') == {
        "KEY": "-----BEGIN\nabc\n-----END",
        "NEXT": "1",
    }


def test_empty_value():
    assert parse("A=\nB=''") == {"A": "", "B": ""}


def test_later_assignment_wins():
    assert parse("A=1\nA=2") == {"A": "2"}


def test_error_has_line_number():
    with pytest.raises(DotenvError) as e:
        parse("A=1\nnot a line\n")
    assert e.value.lineno == 2


def test_unterminated_quote():
    with pytest.raises(DotenvError, match="unterminated"):
        parse("A='abc")


def test_text_after_quote_is_error():
    with pytest.raises(DotenvError, match="after the closing quote"):
        parse('A="x" y')


def test_load_does_not_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DOTENVKIT_A", "from-env")
    f = tmp_path / ".env"
    f.write_text("DOTENVKIT_A=from-file\nDOTENVKIT_B=b\n")
    load(f)
    assert os.environ["DOTENVKIT_A"] == "from-env"
    assert os.environ["DOTENVKIT_B"] == "b"
    monkeypatch.delenv("DOTENVKIT_B")


def test_load_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DOTENVKIT_A", "from-env")
    f = tmp_path / ".env"
    f.write_text("DOTENVKIT_A=from-file\n")
    load(f, override=True)
    assert os.environ["DOTENVKIT_A"] == "from-file"
