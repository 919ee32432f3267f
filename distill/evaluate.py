"""`distill eval`: pass@1 of a model on a benchmark (eval/<name>.yaml), served with vLLM.

    distill eval --model runs/student --output runs/eval-student             # built-in held-out split
    distill eval --model runs/student --tasks sample --output runs/eval-sample

Writes DIR/samples.jsonl (one row per problem, with the verdict), DIR/results.json and the config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from collections import defaultdict
from pathlib import Path

from distill import config as config_mod
from distill.benchmarks import load_benchmark, load_benchmark_prompts
from distill.config import EvalConfig
from distill.errors import DistillError
from distill.generate import Job, Result, build_messages, run_jobs, sampling_params
from distill.metrics import mean_pass_at_k
from distill.records import write_json, write_jsonl
from distill.server import servers_for
from distill.verify import verify_choice, verify_many


def run(cfg: EvalConfig) -> dict:
    if cfg.num_samples < 1:
        raise DistillError("--num-samples must be at least 1")
    bench = load_benchmark(cfg.tasks)
    if bench.verifier not in ("math", "multiple_choice"):
        raise DistillError(
            f"benchmark {bench.name}: the {bench.verifier!r} verifier is not available in `distill eval` yet "
            "(math and multiple_choice are); `distill filter` checks code rows in its sandbox"
        )
    problems = load_benchmark_prompts(bench, num_prompts=cfg.num_prompts, levels=cfg.levels, seed=cfg.seed)
    missing = [p["id"] for p in problems if not p["answer"].strip()]
    if missing:
        raise DistillError(f"benchmark {bench.name}: {len(missing)} problems have no gold answer (first: {missing[0]})")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    serve = dataclasses.replace(cfg.serve, model=cfg.model)
    params = sampling_params(cfg.temperature, cfg.top_p, cfg.max_tokens)
    k = cfg.num_samples
    jobs = [
        Job(p["id"], s, build_messages(p["problem"], cfg.prompt_template), None, p) for p in problems for s in range(k)
    ]
    results: dict[tuple[str, int], Result] = {}
    with servers_for(cfg.server_url, cfg.served_model_name, serve, log_dir=out) as servers:
        model = servers[0].model
        stats = asyncio.run(
            run_jobs(
                servers,
                jobs,
                params,
                lambda r: results.__setitem__((r.job.id, r.job.sample), r),
                cfg.concurrency,
                600.0,
                "eval",
            )
        )
    failed = [r for r in results.values() if r.error]
    if failed:
        raise DistillError(f"{len(failed)} eval requests failed (first: {failed[0].error})")

    keys = [(p["id"], s) for p in problems for s in range(k)]
    items = [
        (str(results[key].job.meta["answer"]), results[key].completion, results[key].finish_reason) for key in keys
    ]
    if bench.verifier == "multiple_choice":
        verdicts = [verify_choice(*item) for item in items]
    else:
        verdicts = verify_many(items, timeout=cfg.timeout, workers=os.cpu_count() or 1)
    verdict = dict(zip(keys, verdicts, strict=True))
    rows = []
    for key in keys:
        r, v = results[key], verdict[key]
        rows.append(
            {
                **r.job.meta,
                "sample": key[1],
                "completion": r.completion,
                "finish_reason": r.finish_reason,
                "completion_tokens": r.completion_tokens,
                "correct": v.correct,
                "verify_reason": v.reason,
                "extracted": v.extracted,
            }
        )
    summary = {
        "model": cfg.model,
        "served_model": model,
        "tasks": bench.name,
        "benchmark": dataclasses.asdict(bench),
        **score(problems, verdict, k),
        "mean_completion_tokens": sum(r["completion_tokens"] for r in rows) / len(rows),
        "truncated": sum(r["finish_reason"] == "length" for r in rows),
        "tokens_per_s": stats["tokens_per_s"],
        "sampling": {**params, "num_samples": k},
    }
    write_jsonl(out / "samples.jsonl", rows)
    write_json(out / "results.json", summary)
    config_mod.save(cfg, out)
    extra = f" ± {summary['pass@1_stderr']:.3f}" if summary["pass@1_stderr"] is not None else ""
    print(
        f"[distill] eval {cfg.model}: pass@1 {summary['pass@1']:.3f}{extra} ({summary['correct']}/{summary['samples']} "
        f"samples, {k} per problem) on {bench.name}; "
        f"by level {', '.join(f'L{lvl} {v:.2f}' for lvl, v in summary['pass@1_by_level'].items())}"
        + "".join(f"; pass@{kk} {v:.3f}" for kk, v in summary["pass@k"].items() if int(kk) > 1),
        flush=True,
    )
    return summary


def score(problems: list[dict], verdict: dict, k: int) -> dict:
    """pass@1 averaged over the k samples of each problem (with its standard error over problems), the
    unbiased pass@k for k = 1, 2, 4, ... up to the samples drawn, and pass@1 by difficulty level."""
    counts = [(k, sum(verdict[(p["id"], s)].correct for s in range(k))) for p in problems]
    p1, se = mean_pass_at_k(counts, 1)
    ks = [kk for kk in (1, 2, 4, 8, 16, 32, 64, 128, 256) if kk <= k]
    by_level: dict[int, list[float]] = defaultdict(list)
    for p, (_, c) in zip(problems, counts, strict=True):
        by_level[p.get("level", 0)].append(c / k)
    return {
        "n": len(problems),
        "samples": len(problems) * k,
        "correct": sum(c for _, c in counts),
        "pass@1": p1,
        "pass@1_stderr": None if math.isnan(se) else se,
        "pass@k": {str(kk): mean_pass_at_k(counts, kk)[0] for kk in ks},
        "pass@1_by_level": {str(lvl): sum(v) / len(v) for lvl, v in sorted(by_level.items())},
    }
