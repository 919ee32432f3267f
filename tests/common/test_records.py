"""Records: JSONL IO, torn lines, the assistant text of a trace."""

import pytest

from distill.common.errors import DistillError
from distill.common.records import assistant_text, read_jsonl, truncate_torn_tail, write_jsonl


def test_write_read_roundtrip(tmp_path):
    rows = [{"id": "a", "x": "é"}, {"id": "b", "x": [1, 2]}]
    assert write_jsonl(tmp_path / "f.jsonl", rows) == 2
    assert list(read_jsonl(tmp_path / "f.jsonl")) == rows
    assert not (tmp_path / "f.jsonl.tmp").exists()


def test_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('{"a": 1}\n{oops\n{"a": 2}\n')
    with pytest.raises(DistillError, match=r"f\.jsonl, line 2: not valid JSON"):
        list(read_jsonl(p))
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DistillError, match="line 2: expected a JSON object"):
        list(read_jsonl(p))


def test_torn_tail_tolerated_and_truncated(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    with pytest.raises(DistillError):
        list(read_jsonl(p))
    assert [r["a"] for r in read_jsonl(p, allow_torn_tail=True)] == [1, 2]
    truncate_torn_tail(p)
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'
    truncate_torn_tail(p)  # idempotent on a clean file
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_assistant_text_rebuilds_think_block():
    assert (
        assistant_text("The answer is \\boxed{4}.", "2+2=4") == "<think>\n2+2=4\n</think>\n\nThe answer is \\boxed{4}."
    )
    assert assistant_text("plain") == "plain"
