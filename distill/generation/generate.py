"""`distill generate`: n reasoning traces per prompt from a teacher behind OpenAI-compatible servers.

    distill generate --output runs/gen --num-prompts 64 --num-samples 4
    distill generate --server-url http://node1:8000/v1 http://node2:8000/v1 --output runs/gen ...

Writes DIR/traces.jsonl (one row per sample, appended and flushed as each arrives, see distill.common.records),
DIR/failures.jsonl (samples that failed after their retries in the last run), DIR/summary.json,
DIR/run.json (the settings that determine the results) and DIR/distill_config.yaml. Without
--server-url it starts vLLM for --teacher and stops it at the end.

Crash safety: each (id, sample) is written once. A run killed at any moment (even SIGKILL) leaves
complete rows plus at most one torn last line; the same command run again cuts the torn line and
requests only the missing samples. A resume whose sampling settings, prompts or teacher differ from the
first run's is refused (--overwrite starts a new run). A lock file keeps two runs from writing one file.

Resume in bounded memory: the traces file is read once, line by line, and only each line's id and sample
are kept, as one byte per requested (prompt, sample) (`scan_written`); no row is held, and the settings
check reads the first row alone. Rows this command wrote itself start with `{"id": ..., "sample": N,`
and are not parsed further; any other line is parsed whole (a bad one is an error naming file and line).
About 2 s and 1.3 MB for a million ~1 KB rows here (README.md, generate).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.common import config as config_mod
from distill.common.client import SAMPLING_KEYS, Job, Result, build_messages, run_jobs, sampling_params
from distill.common.errors import DistillError
from distill.common.hub import push_dataset
from distill.common.lengths import check_length, prompt_lengths
from distill.common.models import model_name, resolve_model
from distill.common.records import assistant_text, check_input_file, read_jsonl, truncate_torn_tail, write_json
from distill.common.server import Server, connect_all, servers_for
from distill.generation.config import GenerateConfig
from distill.problems.prompts import load_prompts

TRACES = "traces.jsonl"
FAILURES = "failures.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".distill-generate.lock"
# Settings that change what the teacher writes: a resume must match the first run on each of these.
# num_prompts and num_samples may grow (a resume then adds the new samples).
FINGERPRINT_KEYS = (
    "dataset",
    "split",
    "problem_column",
    "answer_column",
    "id_column",
    "answer_regex",
    "levels",
    "seed",
    "prompt_template",
    "system_prompt",
    "temperature",
    "top_p",
    "max_tokens",
    "per_request_seed",
    "logprobs",
)


# The start of every row _trace_row writes (json.dumps keeps its key order): the resume scan reads id and
# sample from it without parsing the rest of the line.
ROW_HEAD = re.compile(rb'\{"id": ("(?:[^"\\]|\\.)*"), "sample": (\d+)[,}]')


def sample_seed(seed: int, pid: str, sample: int) -> int:
    """A per-request sampling seed that is stable across runs and processes."""
    return (seed * 1_000_003 + zlib.crc32(pid.encode()) * 64 + sample) % (2**31 - 1)


# --------------------------------------------------------------------------------------------------
# The output folder: lock, fingerprint, resume


def output_file(output: str | Path) -> Path:
    """generate writes into a folder; a path ending in .jsonl names the traces file itself."""
    out = Path(output)
    return out if out.suffix == ".jsonl" else out / TRACES


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder for the whole run (released by the kernel on any exit)."""
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DistillError(
                f"another `distill generate` (pid {holder}) is writing to {folder}; wait for it or use another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def fingerprint(cfg: GenerateConfig, teacher: str) -> dict:
    return {"teacher": teacher, **{k: getattr(cfg, k) for k in FINGERPRINT_KEYS}}


def check_resume(folder: Path, path: Path, current: dict) -> None:
    """Refuse to append to traces made with other settings; name each difference."""
    run_file = folder / RUN_FILE
    if run_file.is_file():
        try:
            before = json.loads(run_file.read_text()).get("fingerprint", {})
        except (OSError, ValueError):
            before = {}
        source = str(run_file)
    else:  # traces from elsewhere, or from a run killed before run.json was written: check what rows say
        first = first_row(path)
        sampling = first.get("sampling") or {}
        before = {
            "teacher": first.get("teacher"),
            **{k: sampling.get(k) for k in ("temperature", "top_p", "max_tokens")},
        }
        before = {k: v for k, v in before.items() if v is not None}
        source = f"the first row of {path}"
    diffs = [f"{k}: {before[k]!r} -> {v!r}" for k, v in current.items() if k in before and before[k] != v]
    if diffs:
        raise DistillError(
            f"{path} was made with other settings ({'; '.join(diffs)}; see {source}); resuming would mix them. "
            "Use another --output, or --overwrite true to start a new run here"
        )


def first_row(path: Path) -> dict:
    """The first row of a traces file, reading its first line alone ({} when the file is empty or that line torn)."""
    with contextlib.closing(read_jsonl(path, allow_torn_tail=True)) as rows:
        return next(rows, None) or {}


@dataclass
class Written:
    """What a traces file already holds, for a request of len(position) prompts x num_samples."""

    done: bytearray  # done[position[id] * num_samples + sample] == 1: that sample is written
    written: int  # distinct (id, sample) of the request in the file
    other: int  # rows of prompts or samples outside the request (an earlier run asked for more)


def row_key(raw: bytes, path: Path, n: int) -> tuple[Any, Any] | None:
    """(id, sample) of one line of a traces file; None for a blank line. A line `_trace_row` wrote is read
    from its start alone; any other is parsed whole, and an error names the file and line, as read_jsonl's do."""
    head = ROW_HEAD.match(raw)
    if head and raw.endswith((b"}\n", b"}\r\n")):
        quoted = head.group(1)
        try:
            pid = quoted[1:-1].decode("utf-8") if b"\\" not in quoted else json.loads(quoted)
        except ValueError:
            pid = None  # not UTF-8: the whole-line path below says so
        if pid is not None:
            return pid, int(head.group(2))
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DistillError(f"{path}, line {n}: not UTF-8 text (byte {e.start}); is it a JSONL file?") from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise DistillError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
    if "id" not in row or "sample" not in row:
        raise DistillError(f"{path}, line {n}: a trace row needs an 'id' and a 'sample'")
    return row["id"], row["sample"]  # of other types (an int id) they match no requested sample, as before


def scan_written(path: Path, position: dict[str, int], num_samples: int) -> Written:
    """Which (prompt, sample) of the request `path` already holds: one pass over the file, line by line,
    keeping one byte per requested sample (no row, no set of ids). A torn last line (no newline) counts
    as not written."""
    done = bytearray(len(position) * num_samples)
    written = other = 0
    if not path.exists():
        return Written(done, 0, 0)
    check_input_file(path)
    with open(path, "rb", buffering=1 << 20) as f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):  # only the last line can lack it: a torn tail
                break
            key = row_key(raw, path, n)
            if key is None:
                continue
            i = position.get(key[0]) if isinstance(key[0], str) else None
            if i is None or not isinstance(key[1], int) or not 0 <= key[1] < num_samples:
                other += 1
                continue
            slot = i * num_samples + key[1]
            if not done[slot]:
                done[slot] = 1
                written += 1
    return Written(done, written, other)


def _trace_row(res: Result, params: dict, teacher: str) -> dict:
    p = res.job.meta
    return {
        "id": p["id"],
        "sample": res.job.sample,
        "problem": p["problem"],
        "answer": p["answer"],
        "domain": p.get("domain", "math"),
        "level": p.get("level", 0),
        "messages": res.job.messages
        + [{"role": "assistant", "content": assistant_text(res.completion, res.reasoning)}],
        "completion": res.completion,
        "reasoning": res.reasoning,
        "finish_reason": res.finish_reason,
        "truncated": res.finish_reason == "length",
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
        "teacher": teacher,
        "sampling": {**{k: v for k, v in params.items() if k in SAMPLING_KEYS}, "seed": res.job.seed},
        **({"teacher_logprobs": res.logprobs} if res.logprobs is not None else {}),
    }


# --------------------------------------------------------------------------------------------------
# The stage


def run(cfg: GenerateConfig) -> dict:
    if cfg.num_samples < 1:
        raise DistillError("num_samples must be at least 1")
    if cfg.logprobs < 0:
        raise DistillError(f"--logprobs must be 0 (none) or a number of alternatives K, got {cfg.logprobs}")
    if cfg.logprobs > 20 and not cfg.server_url and not any("max-logprobs" in a for a in cfg.serve.extra_args):
        # vLLM refuses top_logprobs above its --max-logprobs (20 by default): raise it on the server we start
        cfg = dataclasses.replace(
            cfg,
            serve=dataclasses.replace(
                cfg.serve, extra_args=[*cfg.serve.extra_args, "--max-logprobs", str(cfg.logprobs)]
            ),
        )
    if cfg.concurrency < 0:
        raise DistillError("concurrency must be 0 (automatic) or more")
    if cfg.max_retries < 0 or cfg.retry_backoff < 0:
        raise DistillError("max_retries and retry_backoff must be 0 or more")
    prompts = load_prompts(
        cfg.dataset,
        split=cfg.split,
        num_prompts=cfg.num_prompts,
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        levels=cfg.levels,
        seed=cfg.seed,
        answer_regex=cfg.answer_regex,
    )
    position = {p["id"]: i for i, p in enumerate(prompts)}  # load_prompts refuses duplicate ids
    build_messages(prompts[0]["problem"], cfg.prompt_template, cfg.system_prompt)  # a bad template fails here
    # Running servers are checked before anything is written (a dead URL fails within seconds).
    remote = connect_all(cfg.server_url, cfg.served_model_name) if cfg.server_url else None
    teacher = remote[0].model if remote else (cfg.serve.served_model_name or model_name(cfg.teacher))

    # The longest prompts + max_tokens against the server, before anything is written
    cfg = fit_lengths(cfg, remote, [build_messages(p["problem"], cfg.prompt_template, cfg.system_prompt)
                                    for p in longest_prompts(prompts)])  # fmt: skip

    path = output_file(cfg.output)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder):
        if cfg.overwrite:
            for name in (path.name, FAILURES, RUN_FILE, "summary.json"):
                (folder / name).unlink(missing_ok=True)
        truncate_torn_tail(path)
        current = fingerprint(cfg, teacher)
        if path.exists() and path.stat().st_size:
            check_resume(folder, path, current)
        write_json(folder / RUN_FILE, {"fingerprint": current})
        config_mod.save(cfg, folder)
        k = cfg.num_samples
        have = scan_written(path, position, k)
        jobs = []
        for i, p in enumerate(prompts):
            missing = [s for s in range(k) if not have.done[i * k + s]]
            if not missing:
                continue
            messages = build_messages(p["problem"], cfg.prompt_template, cfg.system_prompt)  # shared by its samples
            jobs += [
                Job(
                    id=p["id"],
                    sample=s,
                    messages=messages,
                    seed=sample_seed(cfg.seed, p["id"], s) if cfg.per_request_seed else None,
                    meta=p,
                )
                for s in missing
            ]
        n_done = have.written + have.other
        if n_done:
            beyond = f" ({have.other} of prompts or samples beyond this request)" if have.other else ""
            print(f"[distill] resuming {path}: {n_done} samples already written{beyond}, {len(jobs)} to go", flush=True)
        summary = _generate(cfg, remote, teacher, jobs, path, folder, len(prompts), n_done)
    if cfg.push_to_hub and not summary["failed"]:
        url = push_dataset(folder, cfg.push_to_hub)
        print(f"[distill] pushed {folder} to {url}", flush=True)
    return summary


LONGEST = 256  # prompts tokenized for the length check: the longest by bytes (the longest in tokens is among them)


def longest_prompts(prompts: list[dict], n: int = LONGEST) -> list[dict]:
    return sorted(prompts, key=lambda p: len(str(p["problem"]).encode()), reverse=True)[:n]


def fit_lengths(cfg: GenerateConfig, remote: list[Server] | None, messages: list[list[dict]]) -> GenerateConfig:
    """The longest prompt + max_tokens against what serves it, before any request: a running server that holds
    less is one clear error (it would refuse each such request, or cut every trace at finish_reason length); a
    server distill starts is started for --teacher with a max_model_len that holds it (the teacher's positions
    permitting). Prompts are counted with the teacher's tokenizer where it is here, else bounded by their bytes."""
    spec = cfg.teacher
    local = spec.startswith("embedded:") or Path(spec).expanduser().is_dir()
    path = resolve_model(spec) if local and not remote else spec
    lengths, counted = prompt_lengths(path, messages, "")
    needed = max(lengths) + cfg.max_tokens
    if remote:
        for server in remote:
            if counted != "tokenizer":  # bytes are only an upper bound: say it, refuse nothing on it
                if server.max_model_len and needed > server.max_model_len:
                    print(f"[distill] warning: the longest prompt may not leave room for max_tokens {cfg.max_tokens} "
                          f"in {server.url}'s max_model_len {server.max_model_len} (prompt length bounded by its "
                          f"bytes: no tokenizer of {spec} here); requests over it fail and are listed", flush=True)  # fmt: skip
                continue
            check_length(server.model, path, needed, max(lengths), cfg.max_tokens, server)
        return cfg
    check_length(spec, path, needed, max(lengths), cfg.max_tokens, None)
    serve = dataclasses.replace(cfg.serve, model=spec, max_model_len=max(cfg.serve.max_model_len, needed))
    return dataclasses.replace(cfg, serve=serve)


def _generate(
    cfg: GenerateConfig,
    remote: list[Server] | None,
    teacher: str,
    jobs: list[Job],
    path: Path,
    folder: Path,
    n_prompts: int,
    n_done: int,
) -> dict:
    params = sampling_params(cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.logprobs)
    stats: dict = {"done": 0, "failed": 0, "retries": 0, "completion_tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0}
    errors: list[str] = []
    finish: dict[str, int] = {}
    interrupted = False
    try:
        if jobs:
            with contextlib.ExitStack() as stack:
                servers = remote or stack.enter_context(servers_for([], "", cfg.serve, log_dir=folder))
                out = stack.enter_context(open(path, "a", encoding="utf-8"))
                failures = stack.enter_context(open(folder / FAILURES, "w", encoding="utf-8"))

                def on_result(res: Result) -> None:
                    if res.error:
                        errors.append(f"{res.job.id}#{res.job.sample}: {res.error}")
                        failure = {"id": res.job.id, "sample": res.job.sample, "error": res.error}
                        failures.write(json.dumps({**failure, "attempts": res.attempts}) + "\n")
                        failures.flush()
                        return
                    finish[res.finish_reason] = finish.get(res.finish_reason, 0) + 1
                    # One write of one whole line, flushed at once: a kill leaves at most a torn tail.
                    out.write(json.dumps(_trace_row(res, params, teacher), ensure_ascii=False) + "\n")
                    out.flush()

                start = time.monotonic()
                try:
                    asyncio.run(
                        run_jobs(
                            servers,
                            jobs,
                            params,
                            on_result,
                            cfg.concurrency,
                            cfg.request_timeout,
                            retries=cfg.max_retries,
                            stats=stats,
                            backoff_base=cfg.retry_backoff,
                        )
                    )
                finally:
                    stats["seconds"] = round(time.monotonic() - start, 2)
                    stats["tokens_per_s"] = round(stats["completion_tokens"] / max(stats["seconds"], 1e-9), 1)
        else:
            (folder / FAILURES).unlink(missing_ok=True)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        summary = {
            "output": str(path),
            "teacher": teacher,
            "prompts": n_prompts,
            "requested_samples": n_prompts * cfg.num_samples,
            "already_done": n_done,
            "written": stats["done"],
            "failed": stats["failed"],
            "retries": stats["retries"],
            "finish_reasons": finish,
            "truncated": finish.get("length", 0),
            "completion_tokens": stats["completion_tokens"],
            "seconds": stats["seconds"],
            "tokens_per_s": stats["tokens_per_s"],
            "interrupted": interrupted,
            "errors": errors[:20],
        }
        write_json(folder / "summary.json", summary)
    print(
        f"[distill] generate: {stats['done']} samples written to {path} "
        f"({stats['completion_tokens']} tokens, {stats['tokens_per_s']:.0f} tok/s, {stats['seconds']:.0f} s); "
        f"{summary['truncated']} truncated, {stats['retries']} retries, {stats['failed']} failed",
        flush=True,
    )
    if stats["failed"]:
        raise DistillError(
            f"{stats['failed']} samples failed after {cfg.max_retries} retries (first: {errors[0]}; all in "
            f"{folder / FAILURES}); run the same command again to retry them"
        )
    return summary
