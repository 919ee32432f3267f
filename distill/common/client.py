"""An asyncio client for OpenAI-compatible chat servers: many requests in flight, balanced over
several servers, each retried with backoff. `distill generate`, `distill eval`, the LLM judge and the
safety review all send their requests through `run_jobs`.

Why not the `openai` package: it gives one request with retries, not a bounded pool over several
endpoints with least-in-flight balancing, cool-downs for failing endpoints, per-sample accounting and
vLLM's extra fields (`reasoning_content`, top-K log-probabilities); aiohttp and ~200 lines do all of it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from tqdm import tqdm

from distill.common.errors import DistillError
from distill.common.logprobs import pack, parse_chat_logprobs, request_params
from distill.common.server import Server

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
PER_SERVER_CONCURRENCY = 64


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
    attempts: int = 0
    server: str = ""
    logprobs: dict | None = None  # distill.common.logprobs.pack(...) of the teacher's top-K, when requested


def build_messages(problem: str, template: str, system_prompt: str = "") -> list[dict]:
    try:
        user = template.format(problem=problem)
    except (KeyError, IndexError, ValueError) as e:
        raise DistillError(
            f"prompt_template: cannot fill it ({e!r}); use {{problem}} for the problem and double other braces: \\boxed{{{{}}}}"
        ) from None
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------------
# The client: one request with retries, many requests balanced over servers


def pick_server(servers: list[Server]) -> Server:
    """The server with the fewest requests in flight, among those not cooling down after failures."""
    now = time.monotonic()
    up = [s for s in servers if s.down_until <= now] or servers
    least = min(s.inflight for s in up)
    return random.choice([s for s in up if s.inflight == least])


def backoff(attempt: int, retry_after: float | None = None, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential with full jitter, or Retry-After."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), 120.0)
    return random.uniform(0.0, min(cap, base * 2 ** (attempt - 1)) * 2)


def _retry_after(headers: object) -> float | None:
    try:
        return float(headers.get("Retry-After"))  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None


async def _request(
    session: aiohttp.ClientSession,
    servers: list[Server],
    job: Job,
    params: dict,
    timeout: float,
    retries: int,
    on_retry: Callable[[], None] | None = None,
    backoff_base: float = 1.0,
) -> Result:
    """One sample: try up to 1 + `retries` times, each attempt on the least-loaded healthy server."""
    err = ""
    wait: float | None = None
    for attempt in range(retries + 1):
        if attempt:
            if on_retry:
                on_retry()
            await asyncio.sleep(backoff(attempt, wait, base=backoff_base))
        wait = None
        server = pick_server(servers)
        body = {"model": server.model, "messages": job.messages, **params}
        if job.seed is not None:
            body["seed"] = job.seed
        server.inflight += 1
        try:
            async with session.post(
                server.url + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                text = await r.text()
                if r.status != 200:
                    err = f"HTTP {r.status} from {server.url}: {text[:200]}"
                    if r.status not in RETRY_STATUS:
                        return Result(job, error=err, attempts=attempt + 1, server=server.url)
                    wait = _retry_after(r.headers) if r.status in (429, 503) else None
                    _mark_failed(server)
                    continue
                data = json.loads(text)
                choice = data["choices"][0]
                msg = choice.get("message") or {}
                usage = data.get("usage") or {}
                packed = None
                if params.get("top_logprobs"):
                    where = f"{server.url}, sample {job.id}#{job.sample}"
                    packed = pack(parse_chat_logprobs(choice, int(params["top_logprobs"]), where))
                result = Result(
                    job,
                    completion=msg.get("content") or "",
                    reasoning=msg.get("reasoning_content") or msg.get("reasoning") or "",
                    finish_reason=choice.get("finish_reason") or "",
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                    attempts=attempt + 1,
                    server=server.url,
                    logprobs=packed,
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            kind = "timeout" if isinstance(e, asyncio.TimeoutError) else type(e).__name__
            err = f"{kind} from {server.url}: {e}"[:300]
            _mark_failed(server)
            continue
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:  # a 200 that is not a completion
            err = f"malformed response from {server.url}: {type(e).__name__}: {e}"[:300]
            _mark_failed(server)
            continue
        finally:
            server.inflight -= 1
        server.failures, server.down_until = 0, 0.0
        return result
    return Result(job, error=err or "failed", attempts=retries + 1)


def _mark_failed(server: Server) -> None:
    """After consecutive failures a server is avoided for a while (others take its requests)."""
    server.failures += 1
    if server.failures >= 2:
        server.down_until = time.monotonic() + min(30.0, 2.0 ** (server.failures - 2))


async def run_jobs(
    servers: Server | list[Server],
    jobs: list[Job],
    params: dict,
    on_result: Callable[[Result], None],
    concurrency: int,
    timeout: float,
    desc: str = "generate",
    retries: int = 4,
    stats: dict | None = None,
    backoff_base: float = 1.0,
) -> dict:
    """Keep `concurrency` requests in flight until every job is done; call on_result as each ends.

    `concurrency` workers share one iterator of jobs and each takes the next job the moment its request
    ends: a bounded pool, not batches, so a slow request never holds the others back, and memory stays
    O(concurrency) however many jobs there are. Counts go into `stats` as they happen (so a caller still
    has them after an interrupt)."""
    servers = servers if isinstance(servers, list) else [servers]
    concurrency = concurrency or PER_SERVER_CONCURRENCY * len(servers)
    stats = stats if stats is not None else {}
    stats.update({"done": 0, "failed": 0, "retries": 0, "completion_tokens": 0, "prompt_tokens": 0})
    start = time.monotonic()
    bar = tqdm(total=len(jobs), desc=desc, unit="sample", dynamic_ncols=True, mininterval=1.0)
    slots = max(1, min(concurrency, len(jobs)))
    pending = iter(jobs)  # shared by the workers: each job is taken by exactly one of them
    inflight = 0

    def count_retry() -> None:
        stats["retries"] += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal inflight
        for job in pending:
            inflight += 1
            try:
                res = await _request(session, servers, job, params, timeout, retries, count_retry, backoff_base)
            finally:
                inflight -= 1
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
                inflight=inflight,
                failed=stats["failed"],
                retries=stats["retries"],
                refresh=False,
            )

    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(slots)))
    finally:
        bar.close()
        stats["seconds"] = round(time.monotonic() - start, 2)
    stats["tokens_per_s"] = round(stats["completion_tokens"] / max(stats["seconds"], 1e-9), 1)
    stats["samples_per_s"] = round(stats["done"] / max(stats["seconds"], 1e-9), 3)
    return stats


SAMPLING_KEYS = ("temperature", "top_p", "max_tokens")


def sampling_params(temperature: float, top_p: float, max_tokens: int, logprobs: int = 0) -> dict:
    """The request fields that set sampling (and, with `logprobs` = K > 0, the teacher's top-K per token)."""
    params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    if logprobs:
        params.update(request_params(logprobs))
    return params
