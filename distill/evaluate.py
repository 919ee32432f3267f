"""`distill eval`: pass@1 of a model on a benchmark (eval/<name>.yaml), served with vLLM.

    distill eval --model runs/student --output runs/eval-student             # built-in held-out split
    distill eval --model runs/student --tasks sample --output runs/eval-sample

Writes DIR/samples.jsonl (one row per problem, with the verdict), DIR/results.json and the config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import defaultdict
from pathlib import Path

from distill import config as config_mod
from distill.benchmarks import load_benchmark, load_benchmark_prompts
from distill.config import EvalConfig
from distill.errors import DistillError
from distill.generate import Job, Result, build_messages, run_jobs, sampling_params
from distill.records import write_json, write_jsonl
from distill.server import servers_for
from distill.verify import verify_choice, verify_many


def run(cfg: EvalConfig) -> dict:
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
    jobs = [Job(p["id"], 0, build_messages(p["problem"], cfg.prompt_template), None, p) for p in problems]
    results: dict[str, Result] = {}
    with servers_for(cfg.server_url, cfg.served_model_name, serve, log_dir=out) as servers:
        model = servers[0].model
        stats = asyncio.run(
            run_jobs(servers, jobs, params, lambda r: results.__setitem__(r.job.id, r), cfg.concurrency, 600.0, "eval")
        )
    failed = [r for r in results.values() if r.error]
    if failed:
        raise DistillError(f"{len(failed)} eval requests failed (first: {failed[0].error})")

    items = [(p["answer"], results[p["id"]].completion, results[p["id"]].finish_reason) for p in problems]
    if bench.verifier == "multiple_choice":
        verdicts = [verify_choice(*item) for item in items]
    else:
        verdicts = verify_many(items, timeout=cfg.timeout, workers=os.cpu_count() or 1)
    rows, by_level = [], defaultdict(lambda: [0, 0])
    for p, v in zip(problems, verdicts, strict=True):
        r = results[p["id"]]
        rows.append(
            {
                **p,
                "completion": r.completion,
                "finish_reason": r.finish_reason,
                "completion_tokens": r.completion_tokens,
                "correct": v.correct,
                "verify_reason": v.reason,
                "extracted": v.extracted,
            }
        )
        by_level[p["level"]][0] += v.correct
        by_level[p["level"]][1] += 1
    correct = sum(v.correct for v in verdicts)
    summary = {
        "model": cfg.model,
        "served_model": model,
        "tasks": bench.name,
        "benchmark": dataclasses.asdict(bench),
        "n": len(problems),
        "correct": correct,
        "pass@1": correct / len(problems),
        "pass@1_by_level": {str(k): v[0] / v[1] for k, v in sorted(by_level.items())},
        "mean_completion_tokens": sum(r["completion_tokens"] for r in rows) / len(rows),
        "truncated": sum(r["finish_reason"] == "length" for r in rows),
        "tokens_per_s": stats["tokens_per_s"],
        "sampling": params,
    }
    write_jsonl(out / "samples.jsonl", rows)
    write_json(out / "results.json", summary)
    config_mod.save(cfg, out)
    print(
        f"[distill] eval {cfg.model}: pass@1 {summary['pass@1']:.3f} ({correct}/{len(problems)}) on {bench.name}; "
        f"by level {', '.join(f'L{k} {v:.2f}' for k, v in summary['pass@1_by_level'].items())}",
        flush=True,
    )
    return summary
