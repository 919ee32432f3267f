"""The whole pipeline through the CLI against the real vLLM server on CPU (marker e2e)."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.cli import main
from distill.common.models import ensure_embedded
from distill.common.records import read_jsonl
from distill.problems.benchmarks import available, load_benchmark

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
    # Offline the Hub benchmarks cannot be loaded: decontamination fails closed until they are named.
    out = tmp_path / "filtered"
    assert main(["filter", str(gen), "--output", str(out)]) == 2 and not out.exists()
    skip = ["--decontam-skip", "aime24", "aime25", "gpqa-diamond", "livecodebench", "math500"]
    assert main(["filter", str(gen), "--output", str(out), *skip]) == 0
    kept, rejected = rows(out / "kept.jsonl"), rows(out / "rejected.jsonl")
    report = json.loads((out / "report.json").read_text())
    assert len(kept) + len(rejected) == 12 == report["total"] and report["kept"] == len(kept)
    decon = report["stages"]["decontamination"]
    assert decon["benchmarks"]["gsm8k"] == 1319 and set(decon["skipped"]) == set(skip[1:])
    assert len(kept) >= 3, report
    assert all(r["correct"] and r["verify_reason"] == "correct" for r in kept)
    assert all(r["reject_reason"] for r in rejected)

    # Train a few steps: the student's weights move. Four: the recipe's warmup makes the first step's lr 0, and two
    # steps (one of them effective) left 3 of 4 float32-trained students' answers running to the token limit.
    student = tmp_path / "student"
    assert main(["train", "--size", "tiny", "--data", str(out), "--output", str(student), "--set", "max_steps=4"]) == 0
    before = load_file(str(Path(ensure_embedded("student")) / "model.safetensors"))
    after = load_file(str(student / "model.safetensors"))
    moved = [k for k in before if not torch.equal(before[k].float(), after[k].float())]
    assert len(moved) > len(before) // 2, f"only {len(moved)} of {len(before)} tensors changed"

    # Evaluate the trained student with its own vLLM server (eval starts it): its answers end with the stop
    # token it was trained to emit, before the token limit, and the server used the length eval asked for.
    ev = tmp_path / "eval"
    assert (
        main(["eval", "--model", str(student), "--output", str(ev), "--num-prompts", "4", "--max-tokens", "1024"]) == 0
    )
    res = json.loads((ev / "results.json").read_text())
    samples = rows(ev / "samples.jsonl")
    assert res["n"] == 4 and len(samples) == 4 and res["max_model_len"] >= 1024 + res["longest_prompt_tokens"]
    # A student trained without its stop token never stops (0 of 4); four steps of training do not make the
    # embedded student concise, so half is the bar (greedy: the same answers every run).
    stopped = [s for s in samples if s["finish_reason"] == "stop"]
    assert len(stopped) >= 2, [(s["finish_reason"], s["completion_tokens"]) for s in samples]
    assert all(s["completion_tokens"] < 1024 for s in stopped)


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


# --------------------------------------------------------------------------------------------------
# Eval protocols on the real server


@pytest.mark.parametrize("name", available())
def test_every_eval_definition_passes_the_real_servers_protocol_check(tmp_path, teacher_server, name):
    """Each definition's real requests (its template, sampling, max_tokens: 32,768 for R1's protocol) are
    accepted by vLLM; Hub benchmarks offline are checked with stand-in problems of competition length."""
    bench = load_benchmark(name)
    out = tmp_path / name
    argv = ["eval", "--server-url", teacher_server.url, "--model", "embedded:teacher", "--tasks", name,
            "--num-prompts", "3", "--check-protocol", "true", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "protocol.json").read_text())
    assert report["rejected"] == 0 and report["requests"] >= 1
    assert report["sampling"]["max_tokens"] == (bench.max_tokens or 1024)
    assert report["sampling"]["top_p"] == (bench.top_p if bench.top_p is not None else 1.0)
    assert report["needed_tokens"] <= report["server_max_model_len"] == teacher_server.max_model_len


def test_the_protocol_check_fails_when_the_real_server_would_reject(tmp_path, teacher_server):
    """Longer than the server holds: distill refuses before sending; and a request the server refuses (here
    max_tokens past max_model_len, sent directly) comes back as a rejection, not as a pass."""
    from distill.common.client import Job
    from distill.evaluation.evaluate import check_requests

    too_long = teacher_server.max_model_len + 10
    argv = ["eval", "--server-url", teacher_server.url, "--model", "embedded:teacher", "--tasks", "sample",
            "--num-prompts", "1", "--check-protocol", "true", "--max-tokens", str(too_long),
            "--output", str(tmp_path / "ev")]  # fmt: skip
    assert main(argv) == 2  # refused up front, naming the server's max_model_len
    job = Job("x", 0, [{"role": "user", "content": "What is 2 + 2?"}], None)
    errors = asyncio.run(check_requests(teacher_server, [job], {"max_tokens": too_long, "temperature": 0.0}))
    assert errors[0].startswith("HTTP 400"), errors


def test_gsm8k_runs_offline_and_prints_pass_at_1_with_its_standard_error(tmp_path, teacher_server, capsys):
    ev = tmp_path / "gsm8k"
    argv = ["eval", "--server-url", teacher_server.url, "--model", "embedded:teacher", "--tasks", "gsm8k",
            "--num-prompts", "8", "--max-tokens", "512", "--output", str(ev)]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["n"] == 8 and res["pass@1_stderr"] is not None and res["correct"] >= 2, res
    assert f"pass@1 {res['pass@1']:.3f} ± {res['pass@1_stderr']:.3f}" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# The server dies with distill


def test_distill_serve_killed_with_sigkill_takes_its_server_with_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "distill.cli", "serve", "--model", "embedded:student", "--port", str(port),
           "--set", "cpu_kvcache_gb=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1/models"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    deadline = time.monotonic() + 600
    while not answers():
        assert proc.poll() is None, "distill serve exited before its server answered"
        assert time.monotonic() < deadline, "the server did not answer within 10 minutes"
        time.sleep(2)
    server = descendants(proc.pid)
    assert server, "distill serve has no server process"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while (answers() or alive(server)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not answers(), "the server still answers after distill serve was killed"
    assert not alive(server), f"server processes outlived distill serve: {alive(server)}"


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    out, todo = [], [pid]
    while todo:
        kids = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie waiting for its reaper counts as gone)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.append(pid)
    return running
