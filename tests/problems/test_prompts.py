"""Prompt sources: the built-in problems, local JSONL and Parquet files, and what is wrong with a bad one."""

import pytest

from distill.common.errors import DistillError
from distill.common.records import write_jsonl
from distill.problems.prompts import load_prompts


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
