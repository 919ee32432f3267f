"""Records (JSONL IO, torn lines), prompt sources and the SFT row conversion."""

import json

import pytest

from distill.errors import DistillError
from distill.generate import build_messages, output_file
from distill.prompts import load_prompts
from distill.records import assistant_text, read_jsonl, truncate_torn_tail, write_jsonl
from distill.train import load_sft_rows, recipe_for


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


def test_prompt_template():
    msgs = build_messages("What is 2+2?", "{problem}\nPut it in \\boxed{{}}.", "Be brief.")
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?\nPut it in \\boxed{}."},
    ]
    with pytest.raises(DistillError, match="prompt_template"):
        build_messages("x", "{question}")


def test_output_file():
    assert str(output_file("runs/gen")) == "runs/gen/traces.jsonl"
    assert str(output_file("runs/t.jsonl")) == "runs/t.jsonl"


def test_builtin_prompts():
    ps = load_prompts("builtin", split="test", num_prompts=10, levels=[1, 2])
    assert len(ps) == 10 and {p["level"] for p in ps} == {1, 2}
    with pytest.raises(DistillError, match="num-prompts"):
        load_prompts("builtin", num_prompts=0)


def test_local_jsonl_with_column_mapping(tmp_path):
    p = tmp_path / "p.jsonl"
    write_jsonl(p, [{"q": "1+1?", "a": 2, "key": "k1", "level": "Level 3"}, {"q": "2+2?", "a": 4, "key": "k2"}])
    ps = load_prompts(str(p), problem_column="q", answer_column="a", id_column="key")
    assert ps[0] == {"id": "k1", "problem": "1+1?", "answer": "2", "domain": "math", "level": 3}
    assert ps[1]["level"] == 0
    assert len(load_prompts(str(p), problem_column="q", answer_column="a", num_prompts=1)) == 1


def test_local_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "3*3?", "answer": "9"}]), tmp_path / "p.parquet")
    assert load_prompts(str(tmp_path / "p.parquet"))[0]["answer"] == "9"


def test_prompt_errors(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    p = tmp_path / "p.jsonl"
    write_jsonl(p, [{"question": "1+1?", "answer": 2}])
    with pytest.raises(DistillError, match=r"no column 'problem' for the problem \(columns: answer, question\)"):
        load_prompts(str(p))
    p.write_text("")
    with pytest.raises(DistillError, match="empty"):
        load_prompts(str(p))
    write_jsonl(p, [{"problem": "", "answer": 1}])
    with pytest.raises(DistillError, match="row 1: 'problem' is empty"):
        load_prompts(str(p))
    write_jsonl(p, [{"problem": "a", "id": 1}, {"problem": "b", "id": 1}])
    with pytest.raises(DistillError, match="row 2: duplicate id"):
        load_prompts(str(p), id_column="id", answer_column="")


def test_sft_rows(tmp_path):
    p = tmp_path / "kept.jsonl"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    write_jsonl(p, [{"messages": msgs}] * 3)
    rows = load_sft_rows(tmp_path)
    assert rows[0] == {"prompt": msgs[:1], "completion": msgs[1:]}
    assert len(load_sft_rows(p, max_examples=2)) == 2
    write_jsonl(p, [{"messages": msgs[:1]}])
    with pytest.raises(DistillError, match="row 1"):
        load_sft_rows(p)
    p.write_text(json.dumps({"messages": [msgs[1], msgs[0]]}) + "\n")
    with pytest.raises(DistillError, match="last message must be the assistant"):
        load_sft_rows(p)
    p.write_text("")
    with pytest.raises(DistillError, match="no training rows"):
        load_sft_rows(p)


def test_every_size_has_one_recipe():
    for size in ("tiny", "1.5b", "7b", "8b", "14b", "32b", "70b"):
        assert recipe_for(size).is_file()
    with pytest.raises(DistillError, match="no sft recipe for size '3b'"):
        recipe_for("3b")
