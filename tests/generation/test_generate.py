"""`distill generate` against real HTTP servers on 127.0.0.1: faults, retries, several endpoints,
SIGKILL and resume, refused resume on changed settings. The fake teacher answers in milliseconds,
so these run in the fast tier; tests/test_e2e.py repeats the key ones on the real vLLM server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.cli import main
from distill.common.errors import DistillError
from distill.common.records import write_jsonl
from distill.generation.config import GenerateConfig
from distill.generation.generate import FAILURES, LOCK_FILE, locked, output_file, run
from tests.fakes import FakeOpenAI, FaultProxy, cycle, random_plan, read_rows

ROOT = Path(__file__).resolve().parents[2]


def prompts_file(tmp_path, n=12, poison=()):
    rows = [
        {
            "id": f"p{i:03d}",
            "problem": f"What is {i} + {i + 1}?" + (" POISON" if i in poison else ""),
            "answer": str(2 * i + 1),
        }
        for i in range(n)
    ]
    path = tmp_path / "prompts.jsonl"
    write_jsonl(path, rows)
    return path


def cfg(tmp_path, urls, **kw):
    base = dict(
        output=str(tmp_path / "gen"),
        server_url=list(urls),
        dataset=str(tmp_path / "prompts.jsonl"),
        id_column="id",
        num_prompts=0,
        num_samples=2,
        max_tokens=32,
        retry_backoff=0.02,
    )
    return GenerateConfig(**{**base, **kw})


def pairs(path):
    return sorted((r["id"], r["sample"]) for r in read_rows(path))


def expected(n, k):
    return sorted((f"p{i:03d}", s) for i in range(n) for s in range(k))


@pytest.fixture
def teacher():
    with FakeOpenAI(delay=0.01) as server:
        yield server


def test_rows_and_summary(tmp_path, teacher):
    prompts_file(tmp_path)
    summary = run(cfg(tmp_path, [teacher.url]))
    rows = read_rows(tmp_path / "gen" / "traces.jsonl")
    assert pairs(tmp_path / "gen" / "traces.jsonl") == expected(12, 2)
    r = rows[0]
    assert r["teacher"] == "fake-teacher" and r["finish_reason"] == "stop" and r["truncated"] is False
    assert r["messages"][-1] == {"role": "assistant", "content": r["completion"]}
    assert summary["written"] == 24 and summary["failed"] == 0 and summary["retries"] == 0
    assert json.loads((tmp_path / "gen" / "run.json").read_text())["fingerprint"]["teacher"] == "fake-teacher"
    assert (tmp_path / "gen" / "distill_config.yaml").is_file()


def test_separated_reasoning_and_truncation_are_kept(tmp_path, teacher):
    prompts_file(tmp_path, n=2)
    teacher.reasoning = "First add, then check the sum."
    teacher.finish_reason = "length"
    summary = run(cfg(tmp_path, [teacher.url], num_samples=1))
    rows = read_rows(tmp_path / "gen" / "traces.jsonl")
    r = rows[0]
    assert r["reasoning"] == "First add, then check the sum." and "\\boxed" in r["completion"]
    assert r["messages"][-1]["content"].startswith("<think>\nFirst add, then check the sum.\n</think>\n\n")
    assert r["messages"][-1]["content"].endswith(r["completion"].strip())
    assert r["truncated"] is True and summary["truncated"] == 2


@pytest.mark.parametrize("fault", ["500", "429", "reset", "drop", "garbage", "stall"])
def test_every_fault_is_retried_and_nothing_is_lost(tmp_path, teacher, fault):
    prompts_file(tmp_path, n=6)
    # every other request suffers the fault; the client's timeout is short so a stall costs 0.5 s
    with FaultProxy(teacher.url, cycle(fault, "ok"), stall_seconds=5) as proxy:
        summary = run(cfg(tmp_path, [proxy.url], request_timeout=0.5, max_retries=6))
    assert pairs(tmp_path / "gen" / "traces.jsonl") == expected(6, 2)
    assert proxy.seen[fault] >= 6 and summary["retries"] >= 6 and summary["failed"] == 0


def test_random_mix_of_faults(tmp_path, teacher):
    prompts_file(tmp_path, n=20)
    plan = random_plan({"ok": 0.6, "500": 0.1, "429": 0.1, "reset": 0.1, "drop": 0.05, "garbage": 0.05}, seed=3)
    with FaultProxy(teacher.url, plan) as proxy:
        run(cfg(tmp_path, [proxy.url], max_retries=10, concurrency=8))
    rows = read_rows(tmp_path / "gen" / "traces.jsonl")
    assert pairs(tmp_path / "gen" / "traces.jsonl") == expected(20, 2) and len(rows) == 40
    assert sum(v for k, v in proxy.seen.items() if k != "ok") >= 8


def test_failed_sample_is_recorded_then_retried_on_the_next_run(tmp_path, teacher, capsys):
    prompts_file(tmp_path, n=5, poison={3})
    argv = ["generate", "--server-url", teacher.url, "--output", str(tmp_path / "gen"), "--dataset",
            str(tmp_path / "prompts.jsonl"), "--id-column", "id", "--num-prompts", "0", "--num-samples", "2",
            "--max-retries", "1", "--retry-backoff", "0.02"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("distill generate:")]
    assert len(err) == 1 and "2 samples failed" in err[0] and FAILURES in err[0]
    failures = read_rows(tmp_path / "gen" / FAILURES)
    assert sorted((f["id"], f["sample"]) for f in failures) == [("p003", 0), ("p003", 1)]
    assert all("HTTP 500" in f["error"] and f["attempts"] == 2 for f in failures)
    assert ("p003", 0) not in pairs(tmp_path / "gen" / "traces.jsonl")
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["written"] == 8

    teacher.failing = False
    assert main(argv) == 0
    assert pairs(tmp_path / "gen" / "traces.jsonl") == expected(5, 2)
    assert not (tmp_path / "gen" / FAILURES).exists() or not read_rows(tmp_path / "gen" / FAILURES)


def test_non_retryable_error_fails_at_once(tmp_path, teacher):
    prompts_file(tmp_path, n=2)
    with pytest.raises(DistillError, match="does not serve 'other'"):
        run(cfg(tmp_path, [teacher.url], served_model_name="other"))


def test_several_servers_share_the_load(tmp_path):
    prompts_file(tmp_path, n=30)
    with FakeOpenAI(delay=0.05) as a, FakeOpenAI(delay=0.05) as b:
        run(cfg(tmp_path, [a.url, b.url], concurrency=8))
    assert pairs(tmp_path / "gen" / "traces.jsonl") == expected(30, 2)
    assert a.requests + b.requests == 60 and min(a.requests, b.requests) >= 20, (a.requests, b.requests)


def test_slow_server_gets_fewer_requests(tmp_path):
    prompts_file(tmp_path, n=30)
    with FakeOpenAI(delay=0.01) as fast, FakeOpenAI(delay=0.2) as slow:
        run(cfg(tmp_path, [fast.url, slow.url], concurrency=4))
    assert fast.requests > 2 * slow.requests, (fast.requests, slow.requests)


def test_a_server_that_dies_mid_run_is_routed_around(tmp_path, teacher):
    prompts_file(tmp_path, n=20)
    # the second endpoint answers /models, then resets every completion: as if it crashed after start
    with FaultProxy(teacher.url, cycle("reset")) as dying:
        summary = run(cfg(tmp_path, [teacher.url, dying.url], concurrency=6, max_retries=8))
    assert pairs(tmp_path / "gen" / "traces.jsonl") == expected(20, 2) and summary["failed"] == 0
    assert dying.seen["reset"] < 20  # after two failures in a row it is avoided for a while


def test_dead_or_mismatched_servers_fail_fast(tmp_path, teacher, capsys):
    prompts_file(tmp_path, n=2)
    start = time.monotonic()
    with pytest.raises(DistillError, match="no OpenAI-compatible server answers at http://127.0.0.1:9/v1"):
        run(cfg(tmp_path, [teacher.url, "http://127.0.0.1:9/v1"]))
    assert time.monotonic() - start < 10 and not (tmp_path / "gen").exists()
    with FakeOpenAI(model="another") as other, pytest.raises(DistillError, match="serve different models"):
        run(cfg(tmp_path, [teacher.url, other.url]))


def test_changed_settings_refuse_to_resume(tmp_path, teacher, capsys):
    prompts_file(tmp_path, n=3)
    out = tmp_path / "gen"
    base = ["generate", "--server-url", teacher.url, "--output", str(out), "--dataset", str(tmp_path / "prompts.jsonl"),
            "--id-column", "id", "--num-prompts", "0", "--num-samples", "1"]  # fmt: skip
    assert main(base) == 0
    before = (out / "traces.jsonl").read_text()
    capsys.readouterr()
    assert main([*base, "--temperature", "0.9", "--prompt-template", "Q: {problem}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "temperature: 0.6 -> 0.9" in err and "prompt_template" in err
    assert "--overwrite" in err and (out / "traces.jsonl").read_text() == before
    # more samples per prompt is not a change of settings: the run grows
    assert main([*base, "--num-samples", "2"]) == 0
    assert pairs(out / "traces.jsonl") == expected(3, 2)
    # --overwrite starts over with the new settings
    assert main([*base, "--temperature", "0.9", "--overwrite", "true"]) == 0
    rows = read_rows(out / "traces.jsonl")
    assert len(rows) == 3 and {r["sampling"]["temperature"] for r in rows} == {0.9}


def test_changed_teacher_refuses_to_resume_without_run_file(tmp_path, teacher):
    prompts_file(tmp_path, n=2)
    run(cfg(tmp_path, [teacher.url], num_samples=1))
    (tmp_path / "gen" / "run.json").unlink()  # e.g. traces copied from elsewhere
    with FakeOpenAI(model="bigger-teacher") as other, pytest.raises(DistillError, match="teacher: 'fake-teacher'"):
        run(cfg(tmp_path, [other.url]))


def test_two_runs_cannot_write_one_folder(tmp_path, teacher):
    prompts_file(tmp_path, n=2)
    (tmp_path / "gen").mkdir()
    with locked(tmp_path / "gen"), pytest.raises(DistillError, match=r"another `distill generate` \(pid \d+\)"):
        run(cfg(tmp_path, [teacher.url]))
    run(cfg(tmp_path, [teacher.url]))  # released: works
    assert (tmp_path / "gen" / LOCK_FILE).exists()


def test_output_file():
    assert str(output_file("runs/gen")) == "runs/gen/traces.jsonl"
    assert str(output_file("runs/t.jsonl")) == "runs/t.jsonl"


def _generate_cmd(url, tmp_path):
    return [sys.executable, "-m", "distill.cli", "generate", "--server-url", url, "--output", str(tmp_path / "gen"),
            "--dataset", str(tmp_path / "prompts.jsonl"), "--id-column", "id", "--num-prompts", "0",
            "--num-samples", "4", "--concurrency", "16"]  # fmt: skip


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_at_any_moment_then_resume_gives_every_sample_once(tmp_path):
    import random

    prompts_file(tmp_path, n=60)
    traces = tmp_path / "gen" / "traces.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(0)
    with FakeOpenAI(delay=lambda: rng.uniform(0.0, 0.08)) as teacher:
        kills = 0
        for target in (40, 110, 180):  # kill three times at growing row counts
            proc = subprocess.Popen(_generate_cmd(teacher.url, tmp_path), env=env, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while _lines(traces) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        assert kills >= 2
        written_before = _lines(traces)
        assert 40 <= written_before < 240
        done = subprocess.run(_generate_cmd(teacher.url, tmp_path), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(traces)  # every line is whole JSON
    assert pairs(traces) == expected(60, 4) and len(rows) == 240
    # each sample was requested at most once per run it was missing from, never after it was written
    assert max(teacher.calls.values()) <= 4 * (kills + 1)


def test_sigterm_stops_cleanly_and_keeps_what_was_written(tmp_path):
    prompts_file(tmp_path, n=40)
    traces = tmp_path / "gen" / "traces.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FakeOpenAI(delay=0.05) as teacher:
        proc = subprocess.Popen(_generate_cmd(teacher.url, tmp_path), env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while _lines(traces) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err[-2000:]
        summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
        assert summary["interrupted"] is True and summary["written"] == len(read_rows(traces))
        assert traces.read_bytes().endswith(b"\n")
        assert subprocess.run(_generate_cmd(teacher.url, tmp_path), env=env, capture_output=True).returncode == 0
    assert pairs(traces) == expected(40, 4)


@pytest.mark.model  # the teacher's tokenizer counts the prompts (the embedded teacher's folder)
def test_a_server_too_short_for_the_longest_prompt_and_max_tokens_is_one_error_before_anything_is_written(tmp_path):
    """vLLM would answer HTTP 400 to each such request, or cut every trace at finish_reason length; the run is
    refused before a request is sent or a file written, naming the server's limit and what to set. Without a
    tokenizer (prompts bounded by their bytes) it is a warning, never a refusal on a bound."""
    from distill.common.models import ensure_embedded

    prompts_file(tmp_path, n=4)
    teacher = str(ensure_embedded("teacher"))
    with FakeOpenAI() as srv:
        srv.max_model_len = 512
        with pytest.raises(DistillError, match=r"holds 512 \(max_model_len\).*--max-model-len \d+"):
            run(cfg(tmp_path, [srv.url], max_tokens=1024, teacher=teacher))
        assert not (tmp_path / "gen").exists() and srv.requests == 0
        run(cfg(tmp_path, [srv.url], max_tokens=64, teacher=teacher))  # the same prompts fit with fewer new tokens
    assert len(read_rows(tmp_path / "gen" / "traces.jsonl")) == 8


def test_without_a_server_url_vllm_is_started_for_the_teacher_with_room_for_prompt_and_max_tokens(
    tmp_path, monkeypatch
):
    """--teacher names the model served (it used to serve serve.model, the embedded teacher, whatever --teacher
    said), and its max_model_len holds the longest prompt plus max_tokens."""
    import contextlib

    from distill.generation import generate

    prompts_file(tmp_path, n=3)
    started = []

    @contextlib.contextmanager
    def fake_servers(urls, name, serve_cfg, log_dir=None):  # noqa: ARG001
        started.append(serve_cfg)
        raise DistillError("stop here")
        yield []

    monkeypatch.setattr(generate, "servers_for", fake_servers)
    with pytest.raises(DistillError, match="stop here"):
        run(cfg(tmp_path, [], teacher="org/some-teacher", max_tokens=6000))
    assert started[0].model == "org/some-teacher" and started[0].max_model_len > 6000
