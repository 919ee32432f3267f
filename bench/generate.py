"""Generation throughput: `distill generate` against a bare asyncio client, same server, same run.

    .venv/bin/python bench/generate.py                      # starts the embedded teacher with vLLM (~80 s on CPU)
    .venv/bin/python bench/generate.py --server-url http://127.0.0.1:8000/v1 --prompts 256

Both clients send the same chat requests (built-in train problems, greedy, so both produce the same
tokens) and keep the same number of requests in flight; the bare client is a plain aiohttp loop with a
semaphore that writes nothing. The two are run alternately (bare, distill, bare, distill, ...) after a
warm-up pass, and the script prints generated tokens/s of each and the ratio distill / bare.
A ratio near 1.0 means distill's bookkeeping (JSONL rows, resume, progress) costs no throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.common import client  # noqa: E402
from distill.common.config import ServeConfig  # noqa: E402
from distill.common.server import connect, vllm_server  # noqa: E402
from distill.generation import generate  # noqa: E402
from distill.generation.config import GenerateConfig  # noqa: E402
from distill.problems.prompts import load_prompts  # noqa: E402


async def bare_client(url: str, model: str, bodies: list[list[dict]], params: dict, concurrency: int) -> int:
    """Send every request with at most `concurrency` in flight; return the generated tokens."""
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(session: aiohttp.ClientSession, messages: list[dict]) -> None:
        nonlocal tokens
        async with sem:
            async with session.post(
                url + "/chat/completions", json={"model": model, "messages": messages, **params}
            ) as r:
                data = await r.json()
                tokens += data["usage"]["completion_tokens"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one(session, m) for m in bodies))
    return tokens


def run_bare(url: str, model: str, bodies: list[list[dict]], params: dict, concurrency: int) -> float:
    t0 = time.perf_counter()
    tokens = asyncio.run(bare_client(url, model, bodies, params, concurrency))
    return tokens / (time.perf_counter() - t0)


def run_distill(url: str, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(
            output=tmp,
            server_url=[url],
            num_prompts=args.prompts,
            num_samples=args.samples,
            temperature=0.0,
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        summary = generate.run(cfg)
        return summary["completion_tokens"] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-url", default="", help="a running OpenAI-compatible server (default: start the teacher)")
    ap.add_argument("--model", default="embedded:teacher", help="model to serve when no --server-url")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each client")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    prompts = load_prompts("builtin", split="train", num_prompts=args.prompts, seed=args.seed)
    template = GenerateConfig.prompt_template
    bodies = [client.build_messages(p["problem"], template) for p in prompts for _ in range(args.samples)]
    params = client.sampling_params(0.0, 1.0, args.max_tokens)

    with contextlib.ExitStack() as stack:
        if args.server_url:
            server = connect(args.server_url)
        else:
            server = stack.enter_context(vllm_server(ServeConfig(model=args.model, max_model_len=2048)))
        print(f"warm-up: {len(bodies)} requests", flush=True)
        run_bare(server.url, server.model, bodies, params, args.concurrency)
        bare, ours = [], []
        for r in range(args.rounds):
            bare.append(run_bare(server.url, server.model, bodies, params, args.concurrency))
            ours.append(run_distill(server.url, args))
            print(f"round {r + 1}: bare {bare[-1]:.0f} tok/s, distill generate {ours[-1]:.0f} tok/s", flush=True)

    b, d = statistics.mean(bare), statistics.mean(ours)
    result = {
        "requests": len(bodies),
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "bare_tokens_per_s": round(b, 1),
        "distill_tokens_per_s": round(d, 1),
        "ratio": round(d / b, 3),
    }
    print(json.dumps(result))
    print(f"ratio distill/bare: {d / b:.3f}  (distill {d:.0f} tok/s, bare {b:.0f} tok/s)")


if __name__ == "__main__":
    main()
