"""`distill eval` against a real HTTP server on 127.0.0.1: k samples per problem, pass@1 with its
standard error, unbiased pass@k, by level; a benchmark definition of your own."""

import json

from distill.config import EvalConfig
from distill.evaluate import run
from distill.records import read_jsonl, write_jsonl
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
