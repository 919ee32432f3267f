"""The whole pipeline through the CLI against the real vLLM server on CPU (marker e2e)."""

import json

import pytest

from distill.cli import main
from distill.common.records import read_jsonl

pytestmark = pytest.mark.e2e


def rows(path):
    return list(read_jsonl(path))


def test_pipeline_end_to_end(tmp_path, teacher_server, capsys):
    url = teacher_server.url
    gen = tmp_path / "gen"
    common = ["--server-url", url, "--output", str(gen), "--num-prompts", "6", "--levels", "1", "2"]
    assert main(["generate", *common, "--num-samples", "2", "--max-tokens", "384"]) == 0
    traces = rows(gen / "traces.jsonl")
    assert (
        sorted((r["id"], r["sample"]) for r in traces) == sorted({(r["id"], s) for r in traces for s in (0, 1)})
        and len(traces) == 12
    )
    r = traces[0]
    for key in (
        "id",
        "sample",
        "problem",
        "answer",
        "domain",
        "messages",
        "completion",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "teacher",
        "sampling",
    ):
        assert key in r, key
    assert r["messages"][-1] == {"role": "assistant", "content": r["completion"]}
    assert r["completion_tokens"] > 0 and r["teacher"] == teacher_server.model
    assert (gen / "distill_config.yaml").is_file() and json.loads((gen / "summary.json").read_text())["written"] == 12

    # Resume after a kill: drop the last rows, leave a torn line; the rerun restores exactly the set.
    lines = (gen / "traces.jsonl").read_text().splitlines(keepends=True)
    (gen / "traces.jsonl").write_text("".join(lines[:9]) + lines[9][: len(lines[9]) // 2])
    assert main(["generate", *common, "--num-samples", "2", "--max-tokens", "384"]) == 0
    again = rows(gen / "traces.jsonl")
    assert sorted((r["id"], r["sample"]) for r in again) == sorted((r["id"], r["sample"]) for r in traces)

    # Filter: the teacher solves most level 1-2 problems; every row lands on exactly one side.
    out = tmp_path / "filtered"
    assert main(["filter", str(gen), "--output", str(out)]) == 0
    kept, rejected = rows(out / "kept.jsonl"), rows(out / "rejected.jsonl")
    report = json.loads((out / "report.json").read_text())
    assert len(kept) + len(rejected) == 12 == report["total"] and report["kept"] == len(kept)
    assert len(kept) >= 3, report
    assert all(r["correct"] and r["verify_reason"] == "correct" for r in kept)
    assert all(r["reject_reason"] for r in rejected)

    # Train a few steps, then evaluate the trained student with its own vLLM server.
    student = tmp_path / "student"
    assert main(["train", "--size", "tiny", "--data", str(out), "--output", str(student), "--set", "max_steps=2"]) == 0
    assert (student / "model.safetensors").is_file()
    ev = tmp_path / "eval"
    assert (
        main(["eval", "--model", str(student), "--output", str(ev), "--num-prompts", "4", "--max-tokens", "256"]) == 0
    )
    res = json.loads((ev / "results.json").read_text())
    assert res["n"] == 4 and 0.0 <= res["pass@1"] <= 1.0 and len(rows(ev / "samples.jsonl")) == 4


def test_teacher_eval_through_server(tmp_path, teacher_server):
    ev = tmp_path / "eval"
    argv = [
        "eval",
        "--server-url",
        teacher_server.url,
        "--model",
        "embedded:teacher",
        "--output",
        str(ev),
        "--num-prompts",
        "8",
        "--levels",
        "1",
        "--max-tokens",
        "384",
    ]
    assert main(argv) == 0
    res = json.loads((ev / "results.json").read_text())
    # The 0.5B teacher solves one-step problems: a pass@1 of zero would mean the eval path is broken.
    assert res["n"] == 8 and res["pass@1"] >= 0.5, res


def test_faults_in_front_of_the_real_server_lose_nothing(tmp_path, teacher_server):
    """A fault-injecting proxy between distill and vLLM: 500s, 429s, resets, drops, garbage and one
    stall; every sample still arrives exactly once."""
    from distill.generation.config import GenerateConfig
    from distill.generation.generate import run
    from tests.fakes import FaultProxy

    plan = ["500", "ok", "reset", "ok", "429", "drop", "ok", "garbage", "stall", "ok"]
    with FaultProxy(teacher_server.url, lambda n: plan[n] if n < len(plan) else "ok", stall_seconds=60) as proxy:
        cfg = GenerateConfig(
            output=str(tmp_path / "gen"),
            server_url=[proxy.url],
            num_prompts=4,
            levels=[1],
            num_samples=2,
            max_tokens=48,
            request_timeout=20,
            retry_backoff=0.1,
        )
        summary = run(cfg)
    got = sorted((r["id"], r["sample"]) for r in rows(tmp_path / "gen" / "traces.jsonl"))
    assert len(got) == 8 and len(set(got)) == 8 and summary["failed"] == 0
    assert summary["retries"] >= 6 and proxy.seen["stall"] == 1
    assert all(r["completion_tokens"] > 0 for r in rows(tmp_path / "gen" / "traces.jsonl"))


def test_sigkill_and_resume_against_the_real_server(tmp_path, teacher_server):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "gen"
    # 48 samples, 4 in flight: rows trickle in over several seconds, so the kill lands mid-run
    cmd = [sys.executable, "-m", "distill.cli", "generate", "--server-url", teacher_server.url, "--output", str(out),
           "--num-prompts", "12", "--levels", "1", "--num-samples", "4", "--max-tokens", "48",
           "--concurrency", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    traces = out / "traces.jsonl"
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (not traces.exists() or traces.read_bytes().count(b"\n") < 6) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = traces.read_bytes().count(b"\n")
    assert 6 <= partial < 48
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    got = [(r["id"], r["sample"]) for r in rows(traces)]
    assert len(got) == 48 and len(set(got)) == 48


def test_eval_on_a_benchmark_from_a_local_file(tmp_path, teacher_server):
    ev = tmp_path / "eval"
    argv = ["eval", "--server-url", teacher_server.url, "--model", "embedded:teacher", "--tasks", "sample",
            "--output", str(ev), "--num-prompts", "0", "--max-tokens", "384"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["tasks"] == "sample" and res["n"] == 12
    assert res["correct"] >= 3, res  # simple arithmetic and algebra: the teacher solves several
    assert {r["id"] for r in rows(ev / "samples.jsonl")} == {f"sample-{i:02d}" for i in range(1, 13)}


def test_teacher_top_k_logprobs_from_the_real_server(tmp_path, teacher_server):
    """vLLM returns token ids and top-K log-probabilities; they decode to the completion's text."""
    import numpy as np
    from transformers import AutoTokenizer

    from distill.common.logprobs import unpack
    from distill.common.models import resolve_model

    gen = tmp_path / "gen"
    args = ["generate", "--server-url", teacher_server.url, "--output", str(gen), "--num-prompts", "2"]
    assert main([*args, "--levels", "1", "--num-samples", "1", "--max-tokens", "96", "--logprobs", "5"]) == 0
    tok = AutoTokenizer.from_pretrained(resolve_model("embedded:teacher"))
    for r in rows(gen / "traces.jsonl"):
        tl = unpack(r["teacher_logprobs"])
        assert len(tl) == r["completion_tokens"] and tl.k == 5
        assert tok.decode(tl.ids.tolist(), skip_special_tokens=True).strip() == r["completion"].strip()
        assert np.all(tl.top_ids >= 0)  # vLLM lists K alternatives at every position
        assert np.all(np.diff(tl.top_logprobs, axis=1) <= 1e-3)  # most likely first
        # the top-K hold most of the mass but not more than all of it
        mass = np.exp(tl.top_logprobs).sum(axis=1)
        assert np.all(mass <= 1.01) and np.median(mass) > 0.5


def test_teacher_scores_a_students_text_through_prompt_logprobs(teacher_server):
    """On-policy distillation's teacher call against real vLLM: the log-probability of every completion
    token (and its top-K), in the teacher's own tokens."""
    from transformers import AutoTokenizer

    from distill.common.models import resolve_model
    from distill.training.onpolicy import score

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded:teacher"))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True)
    prompt = list(prompt["input_ids"]) if hasattr(prompt, "keys") else list(prompt)
    good = tok("2 + 3 = 5. The answer is \\boxed{5}.", add_special_tokens=False)["input_ids"]
    bad = tok("2 + 3 = 9. The answer is \\boxed{9}.", add_special_tokens=False)["input_ids"]
    s_good, s_bad = score(
        teacher_server.url, teacher_server.model, [(prompt + good, len(prompt)), (prompt + bad, len(prompt))], k=3
    )
    assert len(s_good.logprobs) == len(good) and all(lp <= 0 for lp in s_good.logprobs)
    assert all(1 <= len(top) <= 4 for top in s_good.top)  # the top-3, plus the scored token when not among them
    assert sum(s_good.logprobs) > sum(s_bad.logprobs) + 2  # the teacher finds the wrong sum far less likely
    (plain,) = score(teacher_server.url, teacher_server.model, [(prompt + good, len(prompt))], k=0)
    assert plain.top == [{}] * len(good)
    assert max(abs(a - b) for a, b in zip(plain.logprobs, s_good.logprobs, strict=True)) < 0.05
