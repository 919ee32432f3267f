"""`distill eval`: pass@1 (and pass@k) of one or several models on a benchmark (eval/<name>.yaml), served with vLLM.

    distill eval --model runs/student --output runs/eval-student             # built-in held-out split
    distill eval --model runs/student --tasks sample --output runs/eval-sample
    distill eval --model embedded:student runs/student embedded:teacher --output runs/compare   # one table
    distill eval --model runs/student-7b --tasks aime24                       # the benchmark's own protocol

Sampling (temperature, top_p, max_tokens, k samples) and the prompt template come from the flags when
given, else from the benchmark definition (eval/aime24.yaml holds R1's protocol), else greedy, 1024
tokens, one sample. Every sampling value is sent with each request (top_k, min_p and the penalties
too), so the server's defaults from the model's generation_config never change a result unseen. The
system prompt is the one the model was trained with (a distill train/grpo folder records it) unless
--system-prompt says otherwise; the chat template is the model's own unless --chat-template names one.
All of it lands in results.json.

Length: the server must hold the longest prompt (counted with the model's tokenizer and chat template)
plus max_tokens. When eval starts vLLM it sets --max-model-len to that; a model with fewer positions, or
a running server (--server-url) with a smaller max_model_len, is refused before any request is sent.
`--check-protocol true` stops there: one streamed request per problem, cut after its first token,
proves the server accepts the protocol.

Answers are checked by the benchmark's verifier: math (math-verify), multiple choice (a letter), or
code (the solution runs on the problem's tests in distill's sandbox).

Writes DIR/samples.jsonl (one row per sample, with the verdict), DIR/results.json and the config; with
several models each gets DIR/<name>/ and DIR/comparison.md holds the table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from distill.common import config as config_mod
from distill.common.client import Job, Result, build_messages, run_jobs, sampling_params
from distill.common.config import CONFIG_FILENAME, DEFAULT_PROMPT_TEMPLATE, load_yaml
from distill.common.errors import DistillError
from distill.common.lengths import check_length, prompt_lengths
from distill.common.models import resolve_model
from distill.common.records import write_json, write_jsonl
from distill.common.resources import resolve_chat_template
from distill.common.server import Server, has_cuda, servers_for
from distill.evaluation.config import EvalConfig
from distill.evaluation.metrics import mean_pass_at_k, paired_difference
from distill.problems.benchmarks import (
    CODE_PROMPT_TEMPLATE,
    Benchmark,
    check_protocol,
    code_problem,
    code_tests,
    load_benchmark,
    load_benchmark_prompts,
)
from distill.verification.answers import Verdict, verify_choice, verify_many
from distill.verification.code_verify import verify_code


def run(cfg: EvalConfig) -> dict:
    """Evaluate every --model; with several, each into <output>/<name>/ plus a comparison table.
    Returns the one model's summary, or {"models": [summaries...], "table": markdown} for several."""
    if len(cfg.tasks) > 1:
        out = Path(cfg.output)
        names = folder_names(cfg.tasks)
        done = {}
        for i, (task, name) in enumerate(zip(cfg.tasks, names, strict=True), start=1):
            print(f"[distill] eval: benchmark {i}/{len(cfg.tasks)}: {task} -> {out / name}", flush=True)
            done[task] = run(dataclasses.replace(cfg, tasks=[task], output=str(out / name)))
        return {"tasks": done}
    bench = load_benchmark(cfg.tasks[0])
    if len(cfg.model) == 1:
        return run_one(cfg, bench)
    if cfg.server_url:
        raise DistillError(
            "several --model values need eval to start each model's server itself: drop --server-url, or run "
            "`distill eval` once per running server"
        )
    out = Path(cfg.output)
    summaries = []
    for model, name in zip(cfg.model, folder_names(cfg.model), strict=True):
        print(f"[distill] eval: model {len(summaries) + 1}/{len(cfg.model)}: {model} -> {out / name}", flush=True)
        summaries.append(run_one(dataclasses.replace(cfg, model=[model], output=str(out / name)), bench))
    table = comparison_table(summaries)
    paired = paired_rows(summaries)
    if paired:
        table += "\n\n" + paired_table(summaries[0]["model"], paired)
    write_json(out / "comparison.json", {"tasks": bench.name, "models": summaries, "paired": paired})
    (out / "comparison.md").write_text(f"# {bench.name}\n\n{table}\n")
    print(table, flush=True)
    return {"models": summaries, "table": table}


def request_timeout(max_tokens: int) -> float:
    """Seconds one request may take by default: 600, or max_tokens at 20 tokens/s per sequence when longer (vLLM
    serving 64 long samples at once decodes each at a few tens of tokens/s)."""
    return max(600.0, max_tokens / 20.0)


def folder_names(models: list[str]) -> list[str]:
    """A short, distinct folder name per model spec: embedded:student -> embedded-student,
    runs/student -> student, Qwen/Qwen2.5-7B -> Qwen2.5-7B (a repeated name gets -2, -3, ...)."""
    names: list[str] = []
    for m in models:
        base = m.rstrip("/").replace(":", "-").split("/")[-1] or "model"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def comparison_table(summaries: list[dict]) -> str:
    """Markdown: one row per model with pass@1 +- stderr, pass@k, by level, length and truncation."""
    ks = sorted({int(k) for s in summaries for k in s["pass@k"] if int(k) > 1})
    levels = sorted({lvl for s in summaries for lvl in s["pass@1_by_level"]}, key=int)
    head = ["model", "pass@1", *(f"pass@{k}" for k in ks)]
    head += [f"L{lvl}" for lvl in levels] if len(levels) > 1 else []
    head += ["samples", "mean tokens", "truncated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        se = s["pass@1_stderr"]
        cells = [str(s["model"]), f"{s['pass@1']:.3f}" + (f" ± {se:.3f}" if se is not None else "")]
        cells += [f"{s['pass@k'][str(k)]:.3f}" if str(k) in s["pass@k"] else "" for k in ks]
        if len(levels) > 1:
            cells += [f"{s['pass@1_by_level'][lvl]:.2f}" if lvl in s["pass@1_by_level"] else "" for lvl in levels]
        cells += [str(s["samples"]), f"{s['mean_completion_tokens']:.0f}", str(s["truncated"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_rows(summaries: list[dict]) -> list[dict]:
    """Every model after the first against the first, on the problems both answered (metrics.paired_difference)."""
    base = summaries[0]["per_problem"]
    rows = []
    for s in summaries[1:]:
        ids = [i for i in base if i in s["per_problem"]]
        if ids:
            d = paired_difference([base[i] for i in ids], [s["per_problem"][i] for i in ids])
            rows.append({"model": s["model"], **d, "stderr": None if math.isnan(d["stderr"]) else d["stderr"]})
    return rows


def paired_table(baseline: str, rows: list[dict]) -> str:
    """Markdown: each model's pass@1 difference from the baseline with its paired error, 95% interval,
    the problems each side wins, and the sign (McNemar) test's p-value."""
    lines = [
        f"Paired against {baseline} (the same problems):",
        "",
        "| model | Δ pass@1 | 95% CI | better on | worse on | p (sign test) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        se = "" if r["stderr"] is None else f" ± {r['stderr']:.3f}"
        lines.append(
            f"| {r['model']} | {r['diff']:+.3f}{se} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['b_better']} "
            f"| {r['a_better']} | {r['p_value']:.3g} |"
        )
    return "\n".join(lines)


def protocol(cfg: EvalConfig, bench: Benchmark) -> dict:
    """Sampling and prompt: the flag when given, else the benchmark definition's value, else the default."""

    def pick(name: str, default: object) -> tuple[object, str]:
        flag, defined = getattr(cfg, name), getattr(bench, name)
        if flag not in (None, ""):
            return flag, "flag"
        if defined not in (None, ""):
            return defined, "benchmark"
        return default, "default"

    template_default = CODE_PROMPT_TEMPLATE if bench.verifier == "code" else DEFAULT_PROMPT_TEMPLATE
    values = {
        "num_samples": pick("num_samples", 1),
        "temperature": pick("temperature", 0.0),
        "top_p": pick("top_p", 1.0),
        "max_tokens": pick("max_tokens", 1024),
        "prompt_template": pick("prompt_template", template_default),
    }
    check_protocol(*(values[k][0] for k in ("prompt_template", "temperature", "top_p", "max_tokens", "num_samples")),
                   where="eval")  # fmt: skip
    return {k: v for k, (v, _) in values.items()} | {"sources": {k: src for k, (_, src) in values.items()}}


# --check-protocol on a benchmark whose problems cannot be loaded here: a problem of competition length
# (~180 words), so the length check and the server see a realistic prompt.
STAND_IN_PROBLEM = (
    "Let $S$ be the set of all ordered triples $(a, b, c)$ of positive integers such that $a + b + c = 2024$ and "
    "the product $abc$ is divisible by $2^{10}$. A triple is called balanced if no two of its entries differ by "
    "more than $500$. Among all balanced triples in $S$, find the number of triples for which $a^2 + b^2 + c^2$ "
    "leaves a remainder of $1$ when divided by $7$, and the greatest common divisor of $a$, $b$ and $c$ is a power "
    "of two. Express your answer as an integer. For reference, two triples that differ only in the order of their "
    "entries are counted separately, and a triple whose entries are all equal is balanced. You may find it useful "
    "to first count the triples that satisfy the divisibility condition, then restrict to balanced ones, and only "
    "then apply the condition modulo $7$; be careful with the cases where one of the entries is a multiple of $7$ "
    "and with the parity of the entries, which the divisibility condition constrains strongly."
)
# Sent with every eval request besides temperature, top_p and max_tokens: vLLM otherwise takes top_k,
# min_p and repetition_penalty from the model's generation_config (Qwen's sets repetition_penalty 1.05-1.1).
NEUTRAL_SAMPLING = {
    "top_k": -1,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def model_prompt(spec: str) -> tuple[str, str]:
    """(system prompt, where it was read) of a model distill trained: a train output records the system turn
    of its training rows, a grpo output its system_prompt; ("", "") for any other model."""
    conf = Path(spec).expanduser() / CONFIG_FILENAME
    if not conf.is_file():
        return "", ""
    values = load_yaml(conf)
    key = {"train": "data_system_prompt", "grpo": "system_prompt"}.get(str(values.get("stage")))
    if key and values.get(key):
        return str(values[key]), f"{conf} ({key})"
    return "", ""


async def check_requests(server: Server, jobs: list[Job], params: dict, timeout: float = 300.0) -> list[str]:
    """Send each job once, streamed, and close it after the first chunk: the server's errors, '' per accepted one."""

    async def one(session: aiohttp.ClientSession, job: Job) -> str:
        body = {"model": server.model, "messages": job.messages, **params, "stream": True}
        try:
            async with session.post(
                server.url + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                if r.status != 200:
                    return f"HTTP {r.status}: {(await r.text())[:300]}"
                async for line in r.content:
                    if line.strip():
                        return "" if line.startswith(b"data:") else f"unexpected stream line {line[:100]!r}"
                return "empty stream"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            return f"{type(e).__name__}: {e}"

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session, j) for j in jobs)))


def run_one(cfg: EvalConfig, bench: Benchmark) -> dict:
    model_spec = cfg.model[0]
    proto = protocol(cfg, bench)
    k = int(proto["num_samples"])
    stand_in = ""
    try:
        problems = load_benchmark_prompts(bench, num_prompts=cfg.num_prompts, levels=cfg.levels, seed=cfg.seed)
    except DistillError as e:
        if not cfg.check_protocol:
            raise
        # The protocol (template, sampling, lengths) is the benchmark's; its problems are not here (a Hub one
        # offline): stand-ins of a competition problem's length take their place, and the report says so.
        stand_in = str(e)
        problems = [
            {"id": f"stand-in-{i}", "problem": STAND_IN_PROBLEM, "answer": "0", "domain": bench.domain, "level": 0}
            for i in range(max(1, min(cfg.num_prompts, 8)))
        ]
        print(f"[distill] eval {bench.name}: its problems cannot be loaded here; checking with stand-ins", flush=True)
    if bench.verifier == "code" and not stand_in:
        for p in problems:
            p["tests"] = code_tests(p)
    missing = [p["id"] for p in problems if not (p.get("tests") if bench.verifier == "code" else p["answer"].strip())]
    if missing and not cfg.check_protocol:
        what = "tests" if bench.verifier == "code" else "gold answer"
        raise DistillError(f"benchmark {bench.name}: {len(missing)} problems have no {what} (first: {missing[0]})")
    if cfg.system_prompt is not None:
        system, system_source = cfg.system_prompt, "flag"
    else:
        system, system_source = model_prompt(model_spec)
    template = str(proto["prompt_template"])
    text = code_problem if bench.verifier == "code" else (lambda p: p["problem"])
    jobs = [Job(p["id"], s, build_messages(text(p), template, system), None, p) for p in problems for s in range(k)]
    max_tokens = int(proto["max_tokens"])
    # Prompts are counted with the model's tokenizer where it is here (a folder, an embedded model); a model
    # behind --server-url that is not here is bounded by the prompts' bytes.
    local = not cfg.server_url or model_spec.startswith("embedded:") or Path(model_spec).expanduser().is_dir()
    path = resolve_model(model_spec) if local else model_spec
    lengths, counted = prompt_lengths(path, [j.messages for j in jobs[::k]], cfg.chat_template)
    needed = max(lengths) + max_tokens
    if not cfg.server_url:
        check_length(model_spec, path, needed, max(lengths), max_tokens, None)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    extra_args = list(cfg.serve.extra_args)
    if cfg.chat_template:
        extra_args += ["--chat-template", str(resolve_chat_template(cfg.chat_template))]
    serve = dataclasses.replace(
        cfg.serve, model=model_spec, max_model_len=max(cfg.serve.max_model_len, needed), extra_args=extra_args
    )
    params = {**sampling_params(float(proto["temperature"]), float(proto["top_p"]), max_tokens), **NEUTRAL_SAMPLING}
    shown = ", ".join(f"{key} {proto[key]}" for key in ("temperature", "top_p", "max_tokens", "num_samples"))
    from_bench = [key for key, src in proto["sources"].items() if src == "benchmark"]
    print(
        f"[distill] eval {bench.name}: {shown}"
        + (f" ({', '.join(from_bench)} from {bench.definition})" if from_bench else ""),
        flush=True,
    )
    if params["top_p"] < 1.0 and not cfg.server_url and not has_cuda():
        print(
            f"[distill] note: top_p {params['top_p']} on CPU sorts the whole vocabulary for every token (about 3x "
            "slower for a 152k vocabulary); pass --top-p 1.0 for a quick CPU run",
            flush=True,
        )
    results: dict[tuple[str, int], Result] = {}
    with servers_for(cfg.server_url, cfg.served_model_name, serve, log_dir=out) as servers:
        model = servers[0].model
        if cfg.server_url:
            for server in servers:
                check_length(model_spec, path, needed, max(lengths), max_tokens, server)
        if cfg.check_protocol:
            errors = asyncio.run(check_requests(servers[0], jobs[::k], params))
            report = {
                "model": model_spec, "tasks": bench.name, "sampling": {**params, "num_samples": k},
                "system_prompt": system, "chat_template": cfg.chat_template or "the model's own",
                "longest_prompt_tokens": max(lengths), "prompt_tokens_counted_by": counted, "needed_tokens": needed,
                "server_max_model_len": servers[0].max_model_len, "requests": len(errors),
                "rejected": sum(bool(e) for e in errors), "errors": sorted({e for e in errors if e})[:5],
                "problems": f"stand-ins ({stand_in})" if stand_in else "the benchmark's",
            }  # fmt: skip
            write_json(out / "protocol.json", report)
            if report["rejected"]:
                raise DistillError(
                    f"the server rejected {report['rejected']} of {len(errors)} requests of the {bench.name} protocol "
                    f"(first: {report['errors'][0]}); see {out / 'protocol.json'}"
                )
            print(
                f"[distill] eval {bench.name}: the server accepts the protocol ({len(errors)} requests; longest prompt "
                f"{max(lengths)} + max_tokens {max_tokens} = {needed} <= max_model_len {servers[0].max_model_len})",
                flush=True,
            )
            return report
        stats = asyncio.run(
            run_jobs(
                servers,
                jobs,
                params,
                lambda r: results.__setitem__((r.job.id, r.job.sample), r),
                cfg.concurrency,
                cfg.request_timeout or request_timeout(max_tokens),
                "eval",
            )
        )
    failed = [r for r in results.values() if r.error]
    if failed:
        raise DistillError(f"{len(failed)} eval requests failed (first: {failed[0].error})")

    keys = [(p["id"], s) for p in problems for s in range(k)]
    verdict = dict(
        zip(keys, check_answers(bench, [results[key] for key in keys], cfg.timeout, cfg.require_boxed), strict=True)
    )
    rows = []
    for key in keys:
        r, v = results[key], verdict[key]
        rows.append(
            {
                **{f: val for f, val in r.job.meta.items() if f != "tests"},
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
        "model": model_spec,
        "served_model": model,
        "tasks": bench.name,
        "benchmark": dataclasses.asdict(bench),
        **score(problems, verdict, k),
        "mean_completion_tokens": sum(r["completion_tokens"] for r in rows) / len(rows),
        "truncated": sum(r["finish_reason"] == "length" for r in rows),
        "tokens_per_s": stats["tokens_per_s"],
        "sampling": {**params, "num_samples": k},
        "prompt_template": template,
        "system_prompt": system,
        "chat_template": str(resolve_chat_template(cfg.chat_template)) if cfg.chat_template else "the model's own",
        "protocol_sources": {**proto["sources"], "system_prompt": system_source or "none"},
        "max_model_len": servers[0].max_model_len,
        "longest_prompt_tokens": max(lengths),
    }
    write_jsonl(out / "samples.jsonl", rows)
    write_json(out / "results.json", summary)
    config_mod.save(dataclasses.replace(cfg, **{f: proto[f] for f in proto if f != "sources"}), out)
    print(summary_line(model_spec, summary, k, bench.name), flush=True)
    return summary


def summary_line(model_spec: str, summary: dict, k: int, bench_name: str) -> str:
    """The one line eval prints for a model: pass@1 ± stderr, counts, by level where the benchmark has several
    levels (a benchmark without levels, e.g. GSM8K, puts every problem at level 0: no breakdown), pass@k > 1."""
    extra = f" ± {summary['pass@1_stderr']:.3f}" if summary["pass@1_stderr"] is not None else ""
    levels = summary["pass@1_by_level"]
    return (
        f"[distill] eval {model_spec}: pass@1 {summary['pass@1']:.3f}{extra} ({summary['correct']}/{summary['samples']} "
        f"samples, {k} per problem) on {bench_name}"
        + (f"; by level {', '.join(f'L{lvl} {v:.2f}' for lvl, v in levels.items())}" if len(levels) > 1 else "")
        + "".join(f"; pass@{kk} {v:.3f}" for kk, v in summary["pass@k"].items() if int(kk) > 1)
    )


def check_answers(
    bench: Benchmark, results: list[Result], timeout: float, require_boxed: bool = False
) -> list[Verdict]:
    """A verdict per result, by the benchmark's verifier. Code runs each sample's tests in the sandbox
    (`timeout` CPU seconds per test case), several samples at once from a thread pool."""
    if bench.verifier == "code":

        def one(r: Result) -> Verdict:
            return verify_code(
                r.completion, r.job.meta["tests"], r.finish_reason, cpu_seconds=timeout, wall_seconds=2 * timeout
            )

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(one, results))
    items = [(str(r.job.meta["answer"]), r.completion, r.finish_reason) for r in results]
    if bench.verifier == "multiple_choice":
        return [verify_choice(*item) for item in items]
    return verify_many(items, timeout=timeout, workers=os.cpu_count() or 1, require_boxed=require_boxed)


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
        # each problem's pass@1, by id: two runs on the same problems are compared pairwise from these
        "per_problem": {str(p["id"]): c / k for p, (_, c) in zip(problems, counts, strict=True)},
    }
