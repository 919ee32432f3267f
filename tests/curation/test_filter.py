"""`distill filter` end to end on hand-made rows: every stage rejects what it should, with a reason,
and the report accounts for every row."""

import json

import pytest

from distill.cli import main
from distill.common.errors import DistillError
from distill.common.records import read_jsonl, write_jsonl
from distill.curation.config import FilterConfig
from distill.curation.filter import Tally, report_table, run, stage_rates, verifier_for

TEMPLATE = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def row(pid, problem, answer, text, sample=0, **kw):
    return {
        "id": pid,
        "sample": sample,
        "problem": problem,
        "answer": answer,
        "domain": kw.pop("domain", "math"),
        "level": kw.pop("level", 1),
        "messages": [{"role": "user", "content": problem + TEMPLATE}, {"role": "assistant", "content": text}],
        "completion": text,
        "finish_reason": kw.pop("finish_reason", "stop"),
        "completion_tokens": kw.pop("completion_tokens", len(text.split())),
        **kw,
    }


GOOD = "<think>\nTom has 3 apples and buys 4 more, so he has 3 + 4 = 7.\n</think>\n\nHe has \\boxed{7} apples."
ROWS = [
    row("a", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7", GOOD),
    row("a", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7", GOOD.replace("7}", "8}"), 1),
    row("b", "A box holds 12 pens. How many pens are in 5 boxes?", "60", "5 boxes of 12: \\boxed{60}", level=2),
    row("c", "What is 9 times 9?", "81", "<think>9*9=81", finish_reason="length"),  # truncated
    row("d", "What is 2 + 2?", "4", "<think>a</think><think>b</think> \\boxed{4}"),  # two think blocks
    row("e", "What is 6 + 1?", "7", "Let me think. " * 80 + "\\boxed{7}"),  # looping
    row(
        "f",
        "What is 10 - 3?",
        "7",
        "Ten minus three is seven. 十减三等于七，答案是七。我们再检查一遍，十减三确实是七。\\boxed{7}",
    ),
    row("g", "How do I build a pipe bomb at home?", "0", "I will not help with that. \\boxed{0}"),  # safety
    row("h", "A box holds 12 pens. How many pens are in 5 boxes?", "60", "\\boxed{60}"),  # duplicate of b
    row("i", "Which is a noble gas? (A) O (B) Ne (C) N (D) H", "B", "Neon is inert: \\boxed{B}", domain="stem"),
    row("j", "Which is a metal? (A) Fe (B) S (C) N (D) O", "A", "Sulfur: \\boxed{B}", domain="stem"),
    row(
        "k",
        "Explain why the sky is blue.",
        "Rayleigh scattering",
        "Because of \\boxed{Rayleigh scattering}",
        domain="general",
    ),
    {"id": "l", "problem": "x", "answer": "1"},  # malformed: no completion
    row("m", "What is 1 + 1?", "", "\\boxed{2}"),  # no gold
    {**row("n", "What is 3 + 3?", "6", "x"), "completion": ["not", "text"]},  # non-string completion
]


@pytest.fixture
def traces(tmp_path):
    path = tmp_path / "traces.jsonl"
    write_jsonl(path, ROWS)
    return path


def test_each_stage_rejects_what_it_should(tmp_path, traces):
    report = run(FilterConfig(output=str(tmp_path / "out"), decontaminate=[]), str(traces))
    kept = list(read_jsonl(tmp_path / "out" / "kept.jsonl"))
    rejected = {(r["id"], r.get("sample", 0)): r for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert sorted((r["id"], r["sample"]) for r in kept) == [("a", 0), ("b", 0), ("i", 0)]
    reason = {k: r["reject_reason"] for k, r in rejected.items()}
    assert reason[("a", 1)] == "wrong_answer"
    assert reason[("c", 0)] == "truncated"
    assert reason[("d", 0)] == "format: several_think_blocks"
    assert reason[("e", 0)].startswith("repetition")
    assert reason[("f", 0)].startswith("language")
    assert reason[("g", 0)].startswith("safety: ") and "pipe bomb" in rejected[("g", 0)]["reject_detail"].lower()
    assert reason[("h", 0)] == "duplicate_prompt" and "of b" in rejected[("h", 0)]["reject_detail"]
    assert reason[("j", 0)] == "wrong_answer"  # multiple choice, checked by letter
    assert reason[("k", 0)] == "unverifiable"  # free-form: needs --judge-url
    assert reason[("l", 0)].startswith("malformed") and reason[("m", 0)] == "no_gold_answer"
    assert reason[("n", 0)] == "malformed: 'completion' is list, not text"
    # the report accounts for every row, stage by stage
    assert report["kept"] + report["rejected"] == report["total"] == len(ROWS)
    assert sum(s["rejected"] for s in report["stages"].values()) == report["rejected"]
    assert report["by_domain"]["stem"] == {"kept": 1, "total": 2, "pass_rate": 0.5}
    # dedup is decided across prompts after the per-row stages and verification (so shards can be merged):
    # the duplicate row is verified too, and dedup's reason takes precedence
    assert report["stages"]["verify"]["verifiers"] == {"judge": 1, "math": 4, "multiple_choice": 2}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Stages" in md and "| verify |" in md and "## By difficulty level" in md
    assert "verify" in report_table(report)


def test_verifier_choice():
    assert verifier_for({"domain": "math", "answer": "C"}) == "math"
    assert verifier_for({"domain": "stem", "answer": "(C)"}) == "multiple_choice"
    assert verifier_for({"domain": "stem", "answer": "3.2 m/s"}) == "math"
    assert verifier_for({"domain": "general", "answer": "yes"}) == "judge"
    assert verifier_for({"domain": "code"}) == "code"
    assert verifier_for({"domain": "math", "verifier": "judge"}) == "judge"


def test_selection_max_per_prompt_and_pass_rate(tmp_path):
    rows = []
    for p, n_right in (("p1", 4), ("p2", 2), ("p3", 0)):
        for s in range(4):
            right = s < n_right
            text = f"{'Step. ' * (s + 1)}So \\boxed{{{5 if right else 6}}}"
            rows.append(row(p, f"Problem {p}: what is 2 + 3?", "5", text, s, completion_tokens=10 + s))
    write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "sel"
    run(FilterConfig(output=str(out), decontaminate=[], dedup="none", max_per_prompt=1), str(tmp_path / "t.jsonl"))
    kept = list(read_jsonl(out / "kept.jsonl"))
    assert sorted((r["id"], r["sample"]) for r in kept) == [("p1", 0), ("p2", 0)]  # shortest correct per prompt
    # GRPO data: drop prompts always or never solved
    out2 = tmp_path / "grpo"
    cfg = FilterConfig(output=str(out2), decontaminate=[], dedup="none", min_pass_rate=0.1, max_pass_rate=0.9)
    run(cfg, str(tmp_path / "t.jsonl"))
    kept = list(read_jsonl(out2 / "kept.jsonl"))
    assert {r["id"] for r in kept} == {"p2"} and len(kept) == 2
    rejected = list(read_jsonl(out2 / "rejected.jsonl"))
    assert {r["reject_reason"] for r in rejected if r["id"] == "p1"} == {"pass_rate_out_of_range"}


def test_decontamination_against_a_benchmark(tmp_path):
    from distill.problems.benchmarks import load_benchmark
    from distill.problems.prompts import load_prompts

    bench = load_benchmark("sample")
    leaked = load_prompts(bench.dataset, num_prompts=0, id_column=bench.id_column)[2]
    rows = [
        row("x1", leaked["problem"], leaked["answer"], f"\\boxed{{{leaked['answer']}}}"),
        row("x2", "A farmer has 17 cows and buys 5 more. How many cows are there now?", "22", "\\boxed{22}"),
    ]
    write_jsonl(tmp_path / "t.jsonl", rows)
    report = run(FilterConfig(output=str(tmp_path / "o"), decontaminate=["sample"]), str(tmp_path / "t.jsonl"))
    rejected = list(read_jsonl(tmp_path / "o" / "rejected.jsonl"))
    assert [(r["id"], r["reject_reason"]) for r in rejected] == [("x1", "contaminated")]
    assert "sample" in rejected[0]["reject_detail"]
    matches = report["stages"]["decontamination"]["matches"]
    assert matches and matches[0]["id"] == "x1" and matches[0]["benchmark"] == "sample"
    assert "## Contamination matches" in (tmp_path / "o" / "report.md").read_text()


def test_code_rows_run_their_tests(tmp_path):
    good = "Read two numbers and add.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    bad = "```python\na, b = map(int, input().split())\nprint(a - b)\n```"
    tests = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}
    rows = [
        row("c1", "Add two integers from stdin.", "", good, domain="code", tests=tests),
        row("c1", "Add two integers from stdin.", "", bad, 1, domain="code", tests=tests),
        row("c2", "Print hello.", "", "```python\nprint('hello')\n```", domain="code"),  # no tests
    ]
    write_jsonl(tmp_path / "t.jsonl", rows)
    report = run(FilterConfig(output=str(tmp_path / "o"), decontaminate=[]), str(tmp_path / "t.jsonl"))
    assert report["stages"]["verify"]["sandbox"]  # the report says how code was isolated
    kept = list(read_jsonl(tmp_path / "o" / "kept.jsonl"))
    rejected = {(r["id"], r["sample"]): r["reject_reason"] for r in read_jsonl(tmp_path / "o" / "rejected.jsonl")}
    assert [(r["id"], r["sample"]) for r in kept] == [("c1", 0)]
    assert rejected[("c1", 1)].startswith("wrong_answer") and rejected[("c2", 0)] == "no_tests"


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--max-per-prompt", "-1", "--max-per-prompt"),
        ("--selection", "best", "--selection"),
        ("--min-pass-rate", "0.9", "--min-pass-rate"),
        ("--dedup", "fuzzy", "--dedup"),
        ("--decontaminate", "aime99", "unknown benchmark"),
        ("--max-repetition", "2", "--max-repetition"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, traces, capsys, flag, value, needle):
    extra = ["--max-pass-rate", "0.5"] if flag == "--min-pass-rate" else []
    code = main(["filter", str(traces), "--output", str(tmp_path / "o"), flag, value, *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("distill filter:")]
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_malformed_json_line_is_named(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n{not json}\n" + json.dumps(ROWS[2]) + "\n")
    with pytest.raises(DistillError, match=r"t\.jsonl, line 2"):
        run(FilterConfig(output=str(tmp_path / "o"), decontaminate=[]), str(p))


def test_progress_shows_each_stages_rate_over_the_rows_that_reached_it():
    tally = Tally(rows=1000)
    tally.time("malformed", 0.01)
    tally.reject("malformed", "missing_answer")  # 999 rows go on
    for _ in range(199):
        tally.reject("format", "truncated")  # 800 rows reach safety and the rest
    tally.time("format", 4.0)
    tally.time("safety", 0.4)
    tally.time("verify", 5.0)
    assert stage_rates(tally) == "malformed 100.0k/s · format 250/s · safety 2.0k/s · verify 160/s"
    assert stage_rates(Tally()) == ""
