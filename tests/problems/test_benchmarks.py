"""Benchmark definitions under eval/: every one parses with valid fields; the locally loadable ones yield
problems with gold answers; Hub ones fail fast and clearly offline, or load their `local` copy."""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from distill.cli import main
from distill.common.errors import DistillError
from distill.common.resources import EVAL_DIR
from distill.problems.benchmarks import VERIFIERS, available, load_benchmark, load_benchmark_prompts
from distill.problems.prompts import load_prompts
from distill.verification.answers import verify_math

LOCAL = [n for n in available() if not load_benchmark(n).is_hub]
HUB = [n for n in available() if load_benchmark(n).is_hub]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.mark.parametrize("name", available())
def test_every_shipped_definition_parses_with_valid_fields(name):
    bench = load_benchmark(name)
    assert bench.name == name and bench.description and bench.split and bench.problem_column
    assert bench.verifier in VERIFIERS and bench.answer_column
    lines = (EVAL_DIR / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == f"# distill eval --tasks {name}" and lines[1].startswith("# ")
    if bench.is_hub:
        assert "/" in bench.dataset and bench.domain and not bench.local
    if bench.choice_columns:
        assert bench.verifier == "multiple_choice"


def test_shipped_set():
    assert {"builtin", "sample", "gsm8k"} <= set(LOCAL)
    assert {"aime24", "aime25", "math500", "gpqa-diamond", "livecodebench"} <= set(HUB)
    assert load_benchmark("builtin").split == "test"


def test_gsm8k_is_shipped_whole_with_its_license_and_loads_offline(offline):
    bench = load_benchmark("gsm8k")
    problems = load_benchmark_prompts(bench)
    assert len(problems) == 1319 and len({p["id"] for p in problems}) == 1319
    first = problems[0]
    assert first["problem"].startswith("Janet\u2019s ducks lay 16 eggs per day") and first["answer"] == "18"
    assert all(p["answer"].strip() and "####" not in p["answer"] for p in problems)
    shipped = Path(bench.dataset).parent
    assert (shipped / "LICENSE").read_text().startswith("MIT License") and (shipped / "train.jsonl").is_file()


@pytest.mark.parametrize("name", LOCAL)
def test_every_shipped_benchmark_loads_problems_with_answers(name):
    bench = load_benchmark(name)
    assert bench.name == name and bench.description
    problems = load_benchmark_prompts(bench, num_prompts=10)
    assert len(problems) == 10
    assert all(p["problem"].strip() and p["answer"].strip() for p in problems)


def test_file_benchmark_maps_rows_like_load_prompts():
    bench = load_benchmark("sample")
    expected = load_prompts(bench.dataset, split=bench.split, id_column=bench.id_column)
    assert load_benchmark_prompts(bench) == expected
    assert load_benchmark_prompts(bench, num_prompts=3) == expected[:3]


def test_sample_answers_verify_against_themselves_and_not_neighbours():
    bench = load_benchmark("sample")
    problems = load_prompts(bench.dataset, num_prompts=0, id_column=bench.id_column)
    assert len(problems) == 12 and problems[0]["id"] == "sample-01"
    for p, other in zip(problems, problems[1:] + problems[:1], strict=True):
        assert verify_math(p["answer"], f"So the answer is \\boxed{{{p['answer']}}}.").correct, p
        if other["answer"] != p["answer"]:
            assert not verify_math(p["answer"], f"\\boxed{{{other['answer']}}}").correct, (p, other)


@pytest.mark.parametrize("name", HUB)
def test_hub_benchmark_offline_without_local_copy_is_a_fast_clear_error(name, offline):
    bench = load_benchmark(name)
    start = time.monotonic()
    with pytest.raises(DistillError) as err:
        load_benchmark_prompts(bench, num_prompts=5)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert f"benchmark {name}: cannot load {bench.dataset!r}" in msg and "offline" in msg.lower()
    assert "local: <file>" in msg and str(EVAL_DIR / f"{name}.yaml") in msg


# One row per shipped Hub benchmark in the dataset's own column layout, to check each definition's columns,
# answer_regex and choices against it through a local copy.
HUB_ROWS = {
    "aime24": {
        "id": 60,
        "problem": "Find $x$ if $x+1=2$.",
        "solution": "...",
        "answer": "1",
        "url": "u",
        "year": "2024",
    },
    "aime25": {"problem": "Find $y$ if $2y=6$.", "answer": "3"},
    "math500": {
        "problem": "Compute $\\frac{1}{2}+\\frac{1}{3}$.",
        "solution": "...",
        "answer": "\\frac{5}{6}",
        "subject": "Prealgebra",
        "level": 2,
        "unique_id": "test/prealgebra/1.json",
    },
    "gpqa-diamond": {
        "Question": "Which particle mediates the electromagnetic force?",
        "Correct Answer": "photon",
        "Incorrect Answer 1": "gluon",
        "Incorrect Answer 2": "W boson",
        "Incorrect Answer 3": "graviton",
        "Record ID": "rec123",
    },
    "livecodebench": {
        "question_title": "Sum",
        "question_content": "Read two integers and print their sum.",
        "platform": "atcoder",
        "question_id": "abc001_a",
        "contest_id": "abc001",
        "contest_date": "2024-09-01T00:00:00",
        "starter_code": "",
        "difficulty": "easy",
        "public_test_cases": '[{"input": "1 2\\n", "output": "3\\n", "testtype": "stdin"}]',
        "private_test_cases": "eJyLjgUAARUAuQ==",
        "metadata": "{}",
    },
}
HUB_GOLD = {"aime24": "1", "aime25": "3", "math500": "\\frac{5}{6}", "livecodebench": None}


@pytest.mark.parametrize("name", HUB)
def test_hub_benchmark_loads_its_local_copy_offline(name, offline, tmp_path, capsys):
    assert name in HUB_ROWS, f"add a row in {name}'s column layout to HUB_ROWS"
    copy = tmp_path / f"{name}.jsonl"
    copy.write_text(json.dumps(HUB_ROWS[name]) + "\n")
    bench = replace(load_benchmark(name), local=str(copy))
    [p] = load_benchmark_prompts(bench)
    assert "using the local copy" in capsys.readouterr().err
    assert p["problem"].startswith(HUB_ROWS[name][bench.problem_column].strip())
    assert p["domain"] == bench.domain
    if HUB_GOLD.get(name):
        assert p["answer"] == HUB_GOLD[name] and verify_math(p["answer"], f"\\boxed{{{p['answer']}}}").correct
    if bench.id_column:
        assert p["id"] == str(HUB_ROWS[name][bench.id_column])
    if bench.choice_columns:
        assert p["answer"] in "ABCD" and f"{p['answer']}) photon" in p["problem"]
    if bench.extra_columns:
        assert set(p["extra"]) == set(bench.extra_columns)


def test_local_copy_with_answer_regex_and_choices(tmp_path, offline):
    rows = [
        {"q": "Ann has 3 apples and buys 4 more. How many?", "a": "3 + 4 = 7\n#### 7", "k": "g1"},
        {"q": "Bob has 1,000 coins and spends 1. How many?", "a": "1000 - 1 = 999\n#### 999\n", "k": "g2"},
    ]
    (tmp_path / "copy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = tmp_path / "gsm.yaml"
    d.write_text(
        "description: GSM8K-like\ndataset: nobody/not-on-the-hub\nconfig: main\nsplit: test\nlocal: copy.jsonl\n"
        "problem_column: q\nanswer_column: a\nid_column: k\nanswer_regex: '####\\s*(.+?)\\s*$'\n"
    )
    bench = load_benchmark(str(d))
    assert bench.is_hub and bench.local == str((tmp_path / "copy.jsonl").resolve())
    problems = load_benchmark_prompts(bench)
    assert [(p["id"], p["answer"]) for p in problems] == [("g1", "7"), ("g2", "999")]
    assert verify_math(problems[0]["answer"], "\\boxed{7}").correct

    d.write_text(d.read_text().replace("####", "@@@@"))
    with pytest.raises(DistillError, match=r"row 1: answer_regex .* does not match"):
        load_benchmark_prompts(load_benchmark(str(d)))
    d.write_text(d.read_text().replace("local: copy.jsonl", "local: gone.jsonl"))
    with pytest.raises(DistillError, match=r"local copy .*gone\.jsonl does not exist"):
        load_benchmark_prompts(load_benchmark(str(d)))


def test_multiple_choice_options_are_shuffled_per_problem_and_seed(tmp_path):
    rows = [
        {"Q": f"Question {i}?", "right": f"right {i}", "w1": f"wrong a{i}", "w2": f"wrong b{i}", "w3": f"wrong c{i}"}
        for i in range(20)
    ]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = tmp_path / "mc.yaml"
    d.write_text(
        "description: mc\ndataset: mc.jsonl\nproblem_column: Q\nanswer_column: right\n"
        "choice_columns: [w1, w2, w3]\nverifier: multiple_choice\ndomain: science\n"
    )
    bench = load_benchmark(str(d))
    first = load_benchmark_prompts(bench, seed=0)
    assert first == load_benchmark_prompts(bench, seed=0)  # stable
    for i, p in enumerate(first):
        options = p["problem"].split("\n\n", 1)[1].splitlines()
        assert [o[:3] for o in options] == ["A) ", "B) ", "C) ", "D) "]
        assert f"{p['answer']}) right {i}" in options and p["domain"] == "science"
    assert len({p["answer"] for p in first}) > 1  # the correct option is not always in one place
    assert [p["problem"] for p in load_benchmark_prompts(bench, seed=1)] != [p["problem"] for p in first]


def test_definition_file_by_path_with_relative_dataset(tmp_path):
    (tmp_path / "probs.jsonl").write_text('{"q": "1+1?", "a": "2"}\n')
    d = tmp_path / "mine.yaml"
    d.write_text("description: mine\ndataset: probs.jsonl\nproblem_column: q\nanswer_column: a\n")
    bench = load_benchmark(str(d))
    assert bench.name == "mine" and bench.dataset == str((tmp_path / "probs.jsonl").resolve())
    assert not bench.is_hub and bench.definition == str(d)
    assert load_benchmark_prompts(bench) == [
        {"id": "row-000000", "problem": "1+1?", "answer": "2", "domain": "math", "level": 0}
    ]


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
    cases = {
        "dataset: a/b\nanswer_regex: '(unclosed'\n": "'answer_regex': not a valid regular expression",
        "dataset: a/b\nanswer_regex: '(a)(b)'\n": "'answer_regex': 2 groups",
        "dataset: a/b\nchoice_columns: [x]\n": "'choice_columns' needs verifier: multiple_choice",
        "dataset: builtin\nconfig: main\n": "'config' names a config of a Hub dataset",
        "dataset: a/b\ndefinition: x.yaml\n": "'definition' is set by distill",
        "dataset: a/b\nchoice_columns: wrong\nverifier: multiple_choice\n": None,
    }
    for text, message in cases.items():
        d.write_text(text)
        if message is None:
            assert load_benchmark(str(d)).choice_columns == ["wrong"]  # a comma list, like other list keys
            continue
        with pytest.raises(DistillError, match=message):
            load_benchmark(str(d))


def test_missing_columns_name_the_definition_key(tmp_path, offline):
    (tmp_path / "c.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    d = tmp_path / "cols.yaml"
    d.write_text("dataset: c.jsonl\nextra_columns: [tests]\nproblem_column: question\n")
    with pytest.raises(DistillError, match=r"no column 'tests' for the extra .*set 'extra_columns' in .*cols\.yaml"):
        load_benchmark_prompts(load_benchmark(str(d)))


def test_unknown_benchmark_is_one_line_exit_2(tmp_path, capsys):
    code = main(["eval", "--tasks", "nope", "--output", str(tmp_path / "e"), "--server-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unknown benchmark 'nope'" in err and "builtin" in err
    assert not (tmp_path / "e").exists()
    assert EVAL_DIR.is_dir()
