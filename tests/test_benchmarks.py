"""Benchmark definitions under eval/: every one loads and yields problems with gold answers."""

import pytest

from distill.benchmarks import EVAL_DIR, available, load_benchmark
from distill.cli import main
from distill.errors import DistillError
from distill.prompts import load_prompts
from distill.verify import verify_math


@pytest.mark.parametrize("name", available())
def test_every_shipped_benchmark_loads_problems_with_answers(name):
    bench = load_benchmark(name)
    assert bench.name == name and bench.description
    problems = load_prompts(
        bench.dataset,
        split=bench.split,
        num_prompts=10,
        problem_column=bench.problem_column,
        answer_column=bench.answer_column,
        id_column=bench.id_column,
    )
    assert len(problems) == 10
    assert all(p["problem"].strip() and p["answer"].strip() for p in problems)


def test_builtin_and_sample_are_shipped():
    assert {"builtin", "sample"} <= set(available())
    assert load_benchmark("builtin").split == "test"


def test_sample_answers_verify_against_themselves_and_not_neighbours():
    bench = load_benchmark("sample")
    problems = load_prompts(bench.dataset, num_prompts=0, id_column=bench.id_column)
    assert len(problems) == 12 and problems[0]["id"] == "sample-01"
    for p, other in zip(problems, problems[1:] + problems[:1], strict=True):
        assert verify_math(p["answer"], f"So the answer is \\boxed{{{p['answer']}}}.").correct, p
        if other["answer"] != p["answer"]:
            assert not verify_math(p["answer"], f"\\boxed{{{other['answer']}}}").correct, (p, other)


def test_definition_file_by_path_with_relative_dataset(tmp_path):
    (tmp_path / "probs.jsonl").write_text('{"q": "1+1?", "a": "2"}\n')
    d = tmp_path / "mine.yaml"
    d.write_text("description: mine\ndataset: probs.jsonl\nproblem_column: q\nanswer_column: a\n")
    bench = load_benchmark(str(d))
    assert bench.name == "mine" and bench.dataset == str((tmp_path / "probs.jsonl").resolve())


def test_bad_definitions_name_key_and_file(tmp_path):
    d = tmp_path / "bad.yaml"
    d.write_text("dataset: builtin\nsplitt: test\n")
    with pytest.raises(DistillError, match=r"bad\.yaml.*'splitt'"):
        load_benchmark(str(d))
    d.write_text("verifier: vibes\n")
    with pytest.raises(DistillError, match="unknown verifier 'vibes'"):
        load_benchmark(str(d))
    with pytest.raises(DistillError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.yaml"))


def test_unknown_benchmark_is_one_line_exit_2(tmp_path, capsys):
    code = main(["eval", "--tasks", "nope", "--output", str(tmp_path / "e"), "--server-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unknown benchmark 'nope'" in err and "builtin" in err
    assert not (tmp_path / "e").exists()
    assert EVAL_DIR.is_dir()
