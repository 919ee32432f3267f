"""`distill eval` against a real HTTP server on 127.0.0.1: k samples per problem, pass@1 with its
standard error, unbiased pass@k, by level; a benchmark definition of your own."""

import json

from distill.common.records import read_jsonl, write_jsonl
from distill.evaluation.config import EvalConfig
from distill.evaluation.evaluate import run, summary_line
from tests.fakes import FakeOpenAI


def bench(tmp_path, n=6):
    rows = [
        {"id": f"q{i}", "problem": f"Add {i} and {i + 10}.", "answer": str(2 * i + 10), "level": 1 + i % 2}
        for i in range(n)
    ]
    write_jsonl(tmp_path / "probs.jsonl", rows)
    d = tmp_path / "mine.yaml"
    d.write_text("description: sums\ndataset: probs.jsonl\nid_column: id\nverifier: math\n")
    return str(d)


def test_k_samples_pass_at_k_and_levels(tmp_path):
    with FakeOpenAI() as server:
        server.wrong_every = 4  # with one request in flight: the 4th sample of every problem is wrong
        cfg = EvalConfig(
            tasks=bench(tmp_path), server_url=[server.url], output=str(tmp_path / "ev"), num_prompts=0, num_samples=4,
            concurrency=1,
        )  # fmt: skip
        res = run(cfg)
    assert res["n"] == 6 and res["samples"] == 24 and res["correct"] == 18
    assert res["pass@1"] == 0.75 and res["pass@1_stderr"] == 0.0
    assert res["pass@k"] == {"1": 0.75, "2": 1.0, "4": 1.0}
    assert res["pass@1_by_level"] == {"1": 0.75, "2": 0.75}
    rows = list(read_jsonl(tmp_path / "ev" / "samples.jsonl"))
    assert len(rows) == 24 and sorted({r["sample"] for r in rows}) == [0, 1, 2, 3]
    assert sum(r["correct"] for r in rows) == 18
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["sampling"]["num_samples"] == 4 and saved["tasks"] == "mine"


def test_one_sample_is_plain_accuracy(tmp_path):
    with FakeOpenAI() as server:
        res = run(
            EvalConfig(tasks=bench(tmp_path, 5), server_url=[server.url], output=str(tmp_path / "ev"), num_prompts=0)
        )
    assert res["pass@1"] == 1.0 and res["correct"] == 5 and res["pass@1_stderr"] == 0.0 and res["pass@k"] == {"1": 1.0}


def test_summary_line_breaks_down_by_level_only_where_there_are_levels():
    summary = {
        "pass@1": 0.75, "pass@1_stderr": 0.1, "correct": 18, "samples": 24,
        "pass@k": {"1": 0.75, "2": 1.0}, "pass@1_by_level": {"1": 0.5, "2": 1.0},
    }  # fmt: skip
    line = summary_line("m", summary, 4, "builtin")
    assert line == (
        "[distill] eval m: pass@1 0.750 ± 0.100 (18/24 samples, 4 per problem) on builtin; by level L1 0.50, L2 1.00;"
        " pass@2 1.000"
    )
    flat = {**summary, "pass@1_stderr": None, "pass@k": {"1": 0.75}, "pass@1_by_level": {"0": 0.75}}  # e.g. GSM8K
    assert (
        summary_line("m", flat, 1, "gsm8k") == "[distill] eval m: pass@1 0.750 (18/24 samples, 1 per problem) on gsm8k"
    )


# --------------------------------------------------------------------------------------------------
# The benchmark's protocol, code benchmarks, several models


def test_benchmark_protocol_applies_unless_a_flag_overrides_it(tmp_path):
    d = bench(tmp_path, 2)
    with open(d, "a") as f:
        f.write("temperature: 0.6\ntop_p: 0.95\nmax_tokens: 300\nnum_samples: 3\nprompt_template: 'Q: {problem}'\n")
    with FakeOpenAI() as server:
        res = run(EvalConfig(tasks=d, server_url=[server.url], output=str(tmp_path / "a"), num_prompts=0))
        first = list(server.bodies)
        server.bodies.clear()
        res2 = run(
            EvalConfig(
                tasks=d, server_url=[server.url], output=str(tmp_path / "b"), num_prompts=0, temperature=0.0,
                num_samples=1, prompt_template="{problem} (briefly)",
            )
        )  # fmt: skip
    neutral = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert res["sampling"] == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 300, "num_samples": 3, **neutral}
    assert res["samples"] == 6 and len(first) == 6
    assert {(b["temperature"], b["top_p"], b["max_tokens"]) for b in first} == {(0.6, 0.95, 300)}
    assert all(b["messages"][-1]["content"].startswith("Q: Add") for b in first)
    assert res["protocol_sources"]["temperature"] == "benchmark"
    assert res2["sampling"] == {"temperature": 0.0, "top_p": 0.95, "max_tokens": 300, "num_samples": 1, **neutral}
    assert res2["protocol_sources"] == {
        "num_samples": "flag", "temperature": "flag", "top_p": "benchmark", "max_tokens": "benchmark",
        "prompt_template": "flag", "system_prompt": "none",
    }  # fmt: skip
    assert all(b["messages"][-1]["content"].endswith("(briefly)") for b in server.bodies)
    saved = (tmp_path / "a" / "distill_config.yaml").read_text()
    assert "num_samples: 3" in saved and "temperature: 0.6" in saved  # what ran, not "unset"


def test_bad_protocol_in_a_definition_names_the_key(tmp_path):
    import pytest

    from distill.common.errors import DistillError
    from distill.problems.benchmarks import load_benchmark

    d = bench(tmp_path, 1)
    with open(d, "a") as f:
        f.write("top_p: 1.5\n")
    with pytest.raises(DistillError, match="key 'top_p'"):
        load_benchmark(d)


LCB_ROWS = [
    {  # stdin problem: the fake model's program adds two numbers
        "question_id": "s1",
        "question_content": "Read two integers and print their sum.",
        "public_test_cases": json.dumps(
            [
                {"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                {"input": "5 7\n", "output": "12\n", "testtype": "stdin"},
            ]
        ),
        "starter_code": "",
        "metadata": "{}",
    },
    {  # LeetCode-style: a Solution method, arguments one JSON value per line
        "question_id": "f1",
        "question_content": "Return the larger of a and b.",
        "public_test_cases": json.dumps(
            [
                {"input": "3\n9", "output": "9", "testtype": "functional"},
                {"input": "4\n-1", "output": "4", "testtype": "functional"},
            ]
        ),
        "starter_code": "class Solution:\n    def bigger(self, a: int, b: int) -> int:",
        "metadata": json.dumps({"func_name": "bigger"}),
    },
    {  # the fake model gets this one wrong
        "question_id": "s2",
        "question_content": "Read two integers and print their product.",
        "public_test_cases": json.dumps([{"input": "2 3\n", "output": "6\n", "testtype": "stdin"}]),
        "starter_code": "",
        "metadata": "{}",
    },
]


def code_bench(tmp_path):
    write_jsonl(tmp_path / "lcb.jsonl", LCB_ROWS)
    d = tmp_path / "lcb.yaml"
    d.write_text(
        "dataset: lcb.jsonl\nproblem_column: question_content\nanswer_column: public_test_cases\n"
        "id_column: question_id\nextra_columns: [starter_code, metadata]\nverifier: code\ndomain: code\n"
    )
    return str(d)


def code_answer(user: str) -> str:
    if "starter code" in user:
        code = "class Solution:\n    def bigger(self, a, b):\n        return max(a, b)\n"
    else:  # sums for every stdin problem: right for s1, wrong for s2
        code = "a, b = map(int, input().split())\nprint(a + b)\n"
    return f"Let me think.\n\n```python\n{code}```"


def test_code_benchmark_runs_the_tests_in_the_sandbox(tmp_path):
    with FakeOpenAI() as server:
        server.respond = code_answer
        res = run(
            EvalConfig(tasks=code_bench(tmp_path), server_url=[server.url], output=str(tmp_path / "ev"), num_prompts=0)
        )
        prompts = {b["messages"][-1]["content"] for b in server.bodies}
    assert res["n"] == 3 and res["correct"] == 2
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "ev" / "samples.jsonl")}
    assert rows["s1"]["correct"] and rows["f1"]["correct"]
    assert not rows["s2"]["correct"] and rows["s2"]["verify_reason"].startswith("wrong_answer")
    assert "tests" not in rows["s1"]
    # the model is told how its program is run: stdin, or the starter code to complete
    assert any("standard input" in p and "python" in p for p in prompts)
    assert any("class Solution:" in p and "def bigger" in p for p in prompts)


def test_livecodebench_private_tests_are_decoded_without_running_pickled_code():
    import base64
    import pickle
    import zlib

    import pytest

    from distill.common.errors import DistillError
    from distill.problems.benchmarks import code_tests

    private = [{"input": "10 20\n", "output": "30\n", "testtype": "stdin"}]
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode()
    prompt = {"id": "s1", "answer": LCB_ROWS[0]["public_test_cases"], "extra": {"private_test_cases": packed}}
    assert code_tests(prompt) == [
        {"input": "1 2\n", "output": "3\n"}, {"input": "5 7\n", "output": "12\n"}, {"input": "10 20\n", "output": "30\n"}
    ]  # fmt: skip

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(DistillError, match="cannot decode private_test_cases"):
        code_tests({**prompt, "extra": {"private_test_cases": evil}})
    functional = {"id": "f", "answer": LCB_ROWS[1]["public_test_cases"], "extra": {}}
    with pytest.raises(DistillError, match="func_name"):
        code_tests(functional)


def test_several_models_one_table(tmp_path, monkeypatch):
    import contextlib

    from distill.evaluation import evaluate

    servers = {}

    @contextlib.contextmanager
    def fake_servers(urls, name, serve, log_dir):  # noqa: ARG001 - stands in for starting vLLM per model
        with FakeOpenAI(model=serve.model) as server:
            server.wrong_every = 2 if serve.model == "weak" else 0
            servers[serve.model] = server
            from distill.common.server import connect_all

            yield connect_all([server.url], serve.model)

    monkeypatch.setattr(evaluate, "servers_for", fake_servers)
    res = run(
        EvalConfig(tasks=bench(tmp_path, 4), model=["strong", "weak", "org/weak"], output=str(tmp_path / "cmp"), num_prompts=0,
                   concurrency=1)
    )  # fmt: skip
    assert [s["model"] for s in res["models"]] == ["strong", "weak", "org/weak"]
    assert [s["pass@1"] for s in res["models"]] == [1.0, 0.5, 1.0]
    for name in ("strong", "weak", "weak-2"):
        assert (tmp_path / "cmp" / name / "results.json").is_file()
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| strong | 1.000 ± 0.000 |" in table and "| weak | 0.500" in table
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["tasks"] == "mine"
    # paired against the first model on the same 4 problems: weak loses 2 of them and wins none
    weak, org_weak = comparison["paired"]
    assert (weak["model"], weak["diff"], weak["a_better"], weak["b_better"], weak["p_value"]) == (
        "weak",
        -0.5,
        2,
        0,
        0.5,
    )
    assert (org_weak["diff"], org_weak["a_better"], org_weak["b_better"], org_weak["p_value"]) == (0.0, 0, 0, 1.0)
    assert "Paired against strong" in table and "| weak | -0.500 ± 0.289 | [-1.000, +0.000] | 0 | 2 | 0.5 |" in table


def test_several_models_refuse_a_running_server(tmp_path):
    import pytest

    from distill.common.errors import DistillError

    with pytest.raises(DistillError, match="several --model"):
        run(
            EvalConfig(
                tasks=bench(tmp_path, 1),
                model=["a", "b"],
                server_url=["http://127.0.0.1:9"],
                output=str(tmp_path / "x"),
            )
        )


def test_several_benchmarks_in_one_tasks_flag_each_into_its_folder(tmp_path, monkeypatch):
    """`--tasks aime24 math500 gpqa-diamond livecodebench` used to fail at argparse (one name)."""
    from distill.cli import COMMANDS, build_parser, configured
    from distill.evaluation import evaluate

    args = build_parser().parse_args(["eval", "--tasks", "sample", "builtin", "--output", str(tmp_path)])
    cfg = configured(COMMANDS["eval"], args)
    assert cfg.tasks == ["sample", "builtin"]
    seen = []
    monkeypatch.setattr(evaluate, "run_one", lambda c, bench: seen.append((bench.name, c.output)) or {"ok": 1})
    result = evaluate.run(cfg)
    assert [name for name, _ in seen] == ["sample", "builtin"]
    assert [out for _, out in seen] == [str(tmp_path / "sample"), str(tmp_path / "builtin")]
    assert set(result["tasks"]) == {"sample", "builtin"}


def test_the_request_timeout_grows_with_max_tokens():
    """A 32k-token reasoning sample at 64 in flight takes longer than 600 s; a timeout would restart it forever."""
    from distill.evaluation.evaluate import request_timeout

    assert request_timeout(1024) == 600.0 and request_timeout(32768) > 1600
    for bad in (-1.0, float("inf")):
        try:
            EvalConfig(request_timeout=bad)
        except Exception as e:  # noqa: BLE001
            assert "request_timeout" in str(e)
        else:
            raise AssertionError(f"request_timeout {bad} accepted")
