"""`distill generate`: n reasoning traces per prompt from a teacher behind an OpenAI-compatible server.

    distill generate --output runs/gen --num-prompts 64 --num-samples 4

Writes DIR/traces.jsonl (one row per sample, appended as each arrives, see distill.records),
DIR/summary.json and DIR/distill_config.yaml. Without --server-url it starts vLLM for --teacher
and stops it at the end. Re-running the same command skips the (id, sample) pairs already written.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from tqdm import tqdm

from distill import config as config_mod
from distill.config import GenerateConfig
from distill.errors import DistillError
from distill.prompts import load_prompts
from distill.records import assistant_text, read_jsonl, truncate_torn_tail, write_json
from distill.server import Server, server_for

TRACES = "traces.jsonl"
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass
class Job:
    id: str
    sample: int
    messages: list[dict]
    seed: int | None  # per-request sampling seed; None sends none
    meta: dict = field(default_factory=dict)  # carried into the row unchanged


@dataclass
class Result:
    job: Job
    completion: str = ""
    reasoning: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""


def build_messages(problem: str, template: str, system_prompt: str = "") -> list[dict]:
    try:
        user = template.format(problem=problem)
    except (KeyError, IndexError, ValueError) as e:
        raise DistillError(
            f"prompt_template: cannot fill it ({e!r}); use {{problem}} for the problem and double other braces: \\boxed{{{{}}}}"
        ) from None
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": user}]


def sample_seed(seed: int, pid: str, sample: int) -> int:
    """A per-request sampling seed that is stable across runs and processes."""
    return (seed * 1_000_003 + zlib.crc32(pid.encode()) * 64 + sample) % (2**31 - 1)


async def _request(
    session: aiohttp.ClientSession, server: Server, job: Job, params: dict, timeout: float, retries: int = 3
) -> Result:
    body = {"model": server.model, "messages": job.messages, **params}
    if job.seed is not None:
        body["seed"] = job.seed
    err = ""
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(min(30.0, 2.0**attempt) * (0.5 + random.random()))
        try:
            async with session.post(
                server.url + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                text = await r.text()
                if r.status in RETRY_STATUS:
                    err = f"HTTP {r.status}: {text[:200]}"
                    continue
                if r.status != 200:
                    return Result(job, error=f"HTTP {r.status}: {text[:300]}")
                data = json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
            err = f"{type(e).__name__}: {e}"[:300]
            continue
        choice = data["choices"][0]
        msg = choice.get("message") or {}
        usage = data.get("usage") or {}
        return Result(
            job,
            completion=msg.get("content") or "",
            reasoning=msg.get("reasoning_content") or msg.get("reasoning") or "",
            finish_reason=choice.get("finish_reason") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    return Result(job, error=err or "failed")


async def run_jobs(
    server: Server,
    jobs: list[Job],
    params: dict,
    on_result: Callable[[Result], None],
    concurrency: int,
    timeout: float,
    desc: str = "generate",
) -> dict:
    """Keep `concurrency` requests in flight until every job is done; call on_result as each ends."""
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    stats = {"done": 0, "failed": 0, "completion_tokens": 0, "prompt_tokens": 0}
    start = time.monotonic()
    bar = tqdm(total=len(jobs), desc=desc, unit="sample", dynamic_ncols=True, mininterval=1.0)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            res = await _request(session, server, job, params, timeout)
            on_result(res)
            if res.error:
                stats["failed"] += 1
            else:
                stats["done"] += 1
                stats["completion_tokens"] += res.completion_tokens
                stats["prompt_tokens"] += res.prompt_tokens
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.update(1)
            bar.set_postfix(
                tok_s=f"{stats['completion_tokens'] / elapsed:.0f}",
                samples_s=f"{stats['done'] / elapsed:.2f}",
                failed=stats["failed"],
                refresh=False,
            )

    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(max(1, min(concurrency, len(jobs))))))
    finally:
        bar.close()
    stats["seconds"] = round(time.monotonic() - start, 2)
    stats["tokens_per_s"] = round(stats["completion_tokens"] / max(stats["seconds"], 1e-9), 1)
    stats["samples_per_s"] = round(stats["done"] / max(stats["seconds"], 1e-9), 3)
    return stats


def sampling_params(temperature: float, top_p: float, max_tokens: int) -> dict:
    return {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}


def output_file(output: str | Path) -> Path:
    """generate writes into a folder; a path ending in .jsonl names the traces file itself."""
    out = Path(output)
    return out if out.suffix == ".jsonl" else out / TRACES


def run(cfg: GenerateConfig) -> dict:
    if cfg.num_samples < 1:
        raise DistillError("num_samples must be at least 1")
    if cfg.concurrency < 1:
        raise DistillError("concurrency must be at least 1")
    prompts = load_prompts(
        cfg.dataset,
        split=cfg.split,
        num_prompts=cfg.num_prompts,
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        levels=cfg.levels,
        seed=cfg.seed,
    )
    path = output_file(cfg.output)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)

    # Resume: keep complete rows, cut a line torn by a kill, skip what is already there.
    truncate_torn_tail(path)
    done = {(r["id"], r["sample"]) for r in read_jsonl(path)} if path.exists() else set()
    jobs = [
        Job(
            id=p["id"],
            sample=s,
            messages=build_messages(p["problem"], cfg.prompt_template, cfg.system_prompt),
            seed=sample_seed(cfg.seed, p["id"], s) if cfg.per_request_seed else None,
            meta=p,
        )
        for p in prompts
        for s in range(cfg.num_samples)
        if (p["id"], s) not in done
    ]
    if done:
        print(f"[distill] resuming {path}: {len(done)} samples already written, {len(jobs)} to go", flush=True)
    config_mod.save(cfg, folder)
    params = sampling_params(cfg.temperature, cfg.top_p, cfg.max_tokens)

    stats: dict = {"done": 0, "failed": 0, "completion_tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0}
    errors: list[str] = []
    finish: dict[str, int] = {}
    if jobs:
        with server_for(cfg.server_url, cfg.served_model_name, cfg.serve, log_dir=folder) as server:
            with open(path, "a", encoding="utf-8") as out:

                def on_result(res: Result) -> None:
                    if res.error:
                        errors.append(f"{res.job.id}#{res.job.sample}: {res.error}")
                        return
                    p = res.job.meta
                    row = {
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
                        "prompt_tokens": res.prompt_tokens,
                        "completion_tokens": res.completion_tokens,
                        "teacher": server.model,
                        "sampling": {**params, "seed": res.job.seed},
                    }
                    finish[res.finish_reason] = finish.get(res.finish_reason, 0) + 1
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    out.flush()

                stats = asyncio.run(run_jobs(server, jobs, params, on_result, cfg.concurrency, cfg.request_timeout))
    summary = {
        "output": str(path),
        "prompts": len(prompts),
        "requested_samples": len(prompts) * cfg.num_samples,
        "already_done": len(done),
        "written": stats["done"],
        "failed": stats["failed"],
        "finish_reasons": finish,
        "completion_tokens": stats["completion_tokens"],
        "seconds": stats["seconds"],
        "tokens_per_s": stats["tokens_per_s"],
        "errors": errors[:20],
    }
    write_json(folder / "summary.json", summary)
    print(
        f"[distill] generate: {stats['done']} samples written to {path} "
        f"({stats['completion_tokens']} tokens, {stats['tokens_per_s']:.0f} tok/s, {stats['seconds']:.0f} s); "
        f"{stats['failed']} failed",
        flush=True,
    )
    if stats["failed"]:
        raise DistillError(
            f"{stats['failed']} samples failed (first: {errors[0]}); run the same command again to retry them"
        )
    return summary
