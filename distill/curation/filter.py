"""`distill filter`: curate teacher traces so only verified-correct, clean, uncontaminated, safe ones
reach SFT.

    distill filter runs/gen --output runs/filtered
    distill filter runs/gen --output runs/grpo-data --min-pass-rate 0.1 --max-pass-rate 0.9
    distill filter runs/gen --shard 0/4 --output runs/f0     # one of 4 machines ...
    distill filter --merge true runs/f0 runs/f1 runs/f2 runs/f3 --output runs/filtered   # ... then one merge

Stages, cheapest first; a row rejected by one stage is not looked at by later ones:
  1. malformed       rows that cannot be checked (missing keys, no gold answer / tests)
  2. format          one well-formed think block, non-empty answer, not truncated, token bounds,
                     language consistency, repetition (distill.verification.quality)
  3. safety          keyword screen (data/safety_keywords.txt); flagged rows optionally reviewed
                     by an LLM (--review-url); rejected as "safety: <category>" (distill.curation.safety)
  4. decontamination 8-gram overlap with benchmark problems under eval/ (distill.curation.dedup)
  5. dedup           exact and near-duplicate prompts across ids (distill.curation.dedup)
  6. verify          per row's verifier: math (math-verify in worker processes with a hard time
                     bound), multiple choice, code (tests run in a sandbox), or an LLM judge
  7. selection       pass-rate window per prompt, then at most k kept samples per prompt
Writes DIR/kept.jsonl, DIR/rejected.jsonl (with reject_reason and reject_detail), DIR/report.json,
DIR/report.md (readable tables) and the config.

At scale. The input is read once, a row at a time; stages 1-4 run in worker processes (one per core) on
chunks of rows, verification in its own pool of workers, and only compact state spans rows: a reason per
rejected row is written out at once; each prompt's first problem text goes to a file (prompts.jsonl) that
dedup streams and reads back by byte offset, its LSH buckets in a SQLite file (dedup.BucketIndex); an 8-byte
hash per prompt id marks the prompts already written, and the report counts prompts from 8-byte hashes per
row. Selection, when asked for, keeps a few facts per verified row (id, sample, length, verdict). The rows that
reached verification are written to a work file and read back once when the cross-row decisions are known.
Memory does not grow with trace length, and by a few bytes per row with their number (bench/scale.py).

Sharding: `--shard i/N` filters the rows whose prompt id hashes to i (all samples of a prompt land in one
shard, so per-prompt selection is exact within it) and leaves out dedup, the one step across prompts; it
writes the prompts dedup needs beside its outputs (prompts.jsonl). `--merge true SHARD...` redoes dedup
over every shard's prompts in input order and writes the final outputs. A run without --shard is the
one-shard case of the same two steps, so N shards plus a merge keep exactly the rows one run keeps.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import tempfile
import time
import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from distill.common import config as config_mod
from distill.common.errors import DistillError
from distill.common.hub import push_dataset
from distill.common.records import KEPT, REJECTED, TRACES, check_input_file, read_jsonl, write_json
from distill.curation import dedup, safety
from distill.curation.config import FilterConfig
from distill.curation.selection import SELECTION_STRATEGIES, pass_rate_filter, select_per_prompt
from distill.problems.benchmarks import available, load_benchmark
from distill.verification import quality
from distill.verification.answers import Verdict, choice_letter, final_part, verify_choice, verify_many
from distill.verification.code_verify import verify_code
from distill.verification.judge import judge_many
from distill.verification.quality import check_format
from distill.verification.sandbox import describe_isolation

VERIFIERS = ("math", "multiple_choice", "code", "judge")
# Built-in benchmark problems are generated: decontaminate against this many (eval uses 150 by default).
BUILTIN_DECONTAM_PROBLEMS = 2000
CHUNK = 128  # rows per task of the per-row stages' worker processes
VERIFY_BATCH = 2048  # rows verified together (one pool of verification workers per batch)
PROMPTS = "prompts.jsonl"  # a shard's prompts for the merge's dedup: first row index, id, problem
ROW_STAGES = ("malformed", "format", "safety", "decontamination")
VERIFY_FIELDS = ("correct", "verify_reason", "extracted")


def input_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in (TRACES, "kept.jsonl"):
            if (p / name).is_file():
                return p / name
        held = sorted(x.name for x in p.iterdir())[:8]
        raise DistillError(
            f"{p} holds no {TRACES} (it holds: {', '.join(held) or 'nothing'}): pass the traces file or a "
            "`distill generate` output folder"
        )
    check_input_file(p)
    return p


def verifier_for(row: dict) -> str:
    """Which verifier checks a row: its own `verifier` key, else by domain and answer shape."""
    if row.get("verifier"):
        return str(row["verifier"])
    domain = str(row.get("domain") or "math")
    if domain == "code":
        return "code"
    if domain == "math":
        return "math"
    answer = str(row.get("answer") or "").strip()
    if len(answer) <= 4 and choice_letter(answer):
        return "multiple_choice"
    return "math" if domain in ("stem", "science") else "judge"


def malformed(row: dict) -> str:
    """Why a row cannot be verified at all ('' when it is well-formed)."""
    for key in ("id", "problem", "completion"):
        if key not in row:
            return f"malformed: missing '{key}'"
    if not isinstance(row["completion"], str):
        return f"malformed: 'completion' is {type(row['completion']).__name__}, not text"
    if not isinstance(row.get("messages"), list) or not row["messages"]:
        return "malformed: missing 'messages'"
    verifier = verifier_for(row)
    if verifier not in VERIFIERS:
        return f"malformed: unknown verifier '{verifier}'"
    if verifier == "code":
        return "" if row.get("tests") else "no_tests"
    answer = row.get("answer")
    if not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
        return "no_gold_answer"
    return ""


def _check_options(cfg: FilterConfig) -> None:
    """Bad option values are errors before any work (and before anything is written)."""

    quality.check_format(
        {"completion": "", "messages": []},
        min_tokens=cfg.min_tokens,
        max_tokens=cfg.max_tokens,
        max_repetition=cfg.max_repetition,
        max_foreign_share=cfg.max_foreign_share,
    )
    if cfg.max_per_prompt < 0:
        raise DistillError("--max-per-prompt must be 0 (no limit) or more")
    if cfg.selection not in SELECTION_STRATEGIES:
        raise DistillError(f"--selection must be one of {', '.join(SELECTION_STRATEGIES)}")
    if not 0.0 <= cfg.min_pass_rate <= cfg.max_pass_rate <= 1.0:
        raise DistillError("--min-pass-rate and --max-pass-rate must satisfy 0 <= min <= max <= 1")
    if cfg.dedup not in ("none", "exact", "near"):
        raise DistillError("--dedup must be none, exact or near")
    if not 0.0 < cfg.dedup_threshold <= 1.0:
        raise DistillError("--dedup-threshold must lie in (0, 1]")
    if cfg.decontam_ngram < 1:
        raise DistillError("--decontam-ngram must be at least 1")
    # finite too: `inf` (or 1e999 in YAML) made every verification worker fail and the run reject every row, exit 0
    if not 0 < cfg.timeout < math.inf:
        raise DistillError(f"--timeout must be a finite number of seconds > 0, got {cfg.timeout}")
    if not 0 < cfg.code_timeout < math.inf:
        raise DistillError(f"--code-timeout must be a finite number of seconds > 0, got {cfg.code_timeout}")
    if cfg.code_memory_mb < 64:
        raise DistillError(f"--code-memory-mb must be at least 64 (MiB), got {cfg.code_memory_mb}")
    if not cfg.max_row_mb > 0:
        raise DistillError(f"--max-row-mb must be > 0, got {cfg.max_row_mb}")
    if cfg.workers < 0:
        raise DistillError(f"--workers must be 0 (one per core) or more, got {cfg.workers}")


def decontamination_sources(cfg: FilterConfig) -> list[tuple[str, list[str]]]:
    """(benchmark, problem texts) for every benchmark decontamination checks. It fails closed: a benchmark
    that cannot be loaded (a Hub one offline, without a local copy) is an error naming every such one, unless
    the user leaves it out knowingly with --decontam-skip (recorded in report.json and the dataset card)."""
    names = _decontam_benchmarks(cfg.decontaminate)
    unknown = [n for n in cfg.decontam_skip if n not in available() and n not in names]
    if unknown:
        raise DistillError(
            f"--decontam-skip: unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(available())})"
        )
    loaded: list[tuple[str, list[str]]] = []
    failed: dict[str, str] = {}
    for name in [n for n in names if n not in cfg.decontam_skip]:
        try:
            builtin = load_benchmark(name).dataset == "builtin"
            loaded += dedup.load_benchmark_problems([name], num=BUILTIN_DECONTAM_PROBLEMS if builtin else 0)
        except DistillError as e:
            failed[name] = str(e).split(". ")[0]
    if failed:
        first = next(iter(failed))
        raise DistillError(
            f"decontamination cannot load {', '.join(failed)} ({first}: {failed[first]}). Give Hub access or a local "
            f"copy (`local:` in eval/NAME.yaml), or leave them out knowingly: --decontam-skip {' '.join(failed)}"
        )
    return loaded


def _unique_by_id(matches: list[dict]) -> list[dict]:
    seen, out = set(), []
    for m in matches:
        if m["id"] not in seen:
            seen.add(m["id"])
            out.append(m)
    return out


def _decontam_benchmarks(names: list[str]) -> list[str]:

    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        # The built-in test split is disjoint from the train split by construction (see distill.problems.tasks), and
        # its problems share template sentences with the train problems, so n-gram overlap means nothing there.
        return [n for n in available() if n != "builtin"]
    unknown = [n for n in names if n not in available() and not n.endswith((".yaml", ".yml"))]
    if unknown:
        raise DistillError(
            f"--decontaminate: unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(available())}, all)"
        )
    return names


# --------------------------------------------------------------------------------------------------
# Stages 1-4, per row, in worker processes


@dataclass
class RowChecks:
    """What the per-row stages need, built once and sent to each worker process once."""

    min_tokens: int
    max_tokens: int
    require_think: bool
    check_language: bool
    max_repetition: float
    max_foreign_share: float
    keywords: dict[str, list[str]] | None  # None: no safety screen
    index: dedup.Contamination | None  # None: no decontamination
    ngram: int

    def check(self, row: dict, clock: dict[str, float]) -> tuple[str, str, str, list]:
        """(stage, reason, detail, keyword hits) of the first per-row stage that rejects the row; ("", "", "", hits)
        when it passes them all (hits: the safety keywords found, for an LLM review)."""
        t = time.perf_counter()
        why = malformed(row)
        clock["malformed"] += (t2 := time.perf_counter()) - t
        if why:
            return "malformed", why, "", []
        why = check_format(
            row,
            min_tokens=self.min_tokens,
            max_tokens=self.max_tokens,
            require_think=self.require_think,
            check_language=self.check_language,
            max_repetition=self.max_repetition,
            max_foreign_share=self.max_foreign_share,
        )
        clock["format"] += (t3 := time.perf_counter()) - t2
        if why:
            return "format", why, "", []
        hits: list = []
        if self.keywords is not None:
            hits = safety.screen(f"{row['problem']}\n{row['completion']}", self.keywords)
        clock["safety"] += (t4 := time.perf_counter()) - t3
        if self.index is not None and (found := self.index.check(row["problem"])):
            best = max(found, key=lambda m: m.count)
            shared = f"{best.count} shared {self.ngram}-grams" if not best.exact else "identical text"
            clock["decontamination"] += time.perf_counter() - t4
            detail = f"{best.benchmark} problem {best.index} ({shared})"
            return "decontamination", "contaminated", detail, [best.benchmark, best.index, best.count]
        clock["decontamination"] += time.perf_counter() - t4
        return "", "", "", hits


_CHECKS: RowChecks | None = None  # in a worker process: set once by _init_worker


def _init_worker(checks: RowChecks) -> None:
    global _CHECKS
    _CHECKS = checks


def check_chunk(rows: list[dict]) -> tuple[list[tuple[str, str, str, list]], dict[str, float]]:
    """The per-row stages on a chunk of rows, in a worker process: one result per row and the seconds each
    stage took."""
    assert _CHECKS is not None, "worker not initialised"
    clock = dict.fromkeys(ROW_STAGES, 0.0)
    return [_CHECKS.check(r, clock) for r in rows], clock


# --------------------------------------------------------------------------------------------------
# One shard: every stage but dedup, streamed


@dataclass
class Tally:
    """Counts and timings of a shard's stages, and the per-row facts the report needs."""

    rows: int = 0
    stages: dict[str, dict] = field(default_factory=dict)
    flagged: int = 0
    reviewed: int = 0
    matches: list[dict] = field(default_factory=list)
    verifiers: Counter = field(default_factory=Counter)
    slowest_verify: float = 0.0
    sandbox: str = ""

    def reject(self, stage: str, reason: str) -> None:
        s = self.stages.setdefault(stage, {"seconds": 0.0, "rejected": 0, "reasons": Counter()})
        s["rejected"] += 1
        s["reasons"][reason] += 1

    def time(self, stage: str, seconds: float) -> None:
        self.stages.setdefault(stage, {"seconds": 0.0, "rejected": 0, "reasons": Counter()})["seconds"] += seconds


def stage_rates(tally: Tally) -> str:
    """The progress bar's per-stage speed: rows that reached each stage per second of that stage's work (summed
    over the worker processes, so a stage's rate is per core), e.g. 'format 240/s · safety 2.4k/s · verify 180/s'."""
    parts, reached = [], tally.rows
    for stage in (*ROW_STAGES, "verify"):
        s = tally.stages.get(stage)
        if s is None:
            continue
        if s["seconds"] > 0 and reached > 0:
            rate = reached / s["seconds"]
            parts.append(f"{stage} {rate / 1000:.1f}k/s" if rate >= 1000 else f"{stage} {rate:.0f}/s")
        if stage != "verify":
            reached -= s["rejected"]
    return " · ".join(parts)


def in_shard(row_id: object, shard: tuple[int, int] | None) -> bool:
    """Whether a prompt id belongs to shard (i, n): by a stable hash of the id, so a prompt's samples share one."""
    return shard is None or zlib.crc32(str(row_id).encode("utf-8", "surrogatepass")) % shard[1] == shard[0]


def parse_shard(spec: str) -> tuple[int, int] | None:
    if not spec:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise DistillError(f"--shard takes I/N (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise DistillError(f"--shard {spec}: I must lie in [0, N-1] and N be at least 1")
    return i, n


TEXT_FIELDS = ("completion", "messages", "reasoning", "teacher_logprobs")


def _text_bytes(row: dict) -> int:
    """A cheap upper bound of a row's text size: its long fields' characters (4 bytes each at most)."""
    size = 0
    for key in TEXT_FIELDS:
        value = row.get(key)
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            size += sum(len(m.get("content") or "") for m in value if isinstance(m, dict))
    return size


def _read_numbered(src: Path, shard: tuple[int, int] | None, max_bytes: int) -> Iterator[list[tuple[int, dict]]]:
    """Chunks of (input row number, row) of the shard's rows, in input order. A row whose text is over
    `max_bytes` comes as a stub (its long fields dropped, "_oversize": its size), so it never reaches a worker."""
    chunk: list[tuple[int, dict]] = []
    for n, row in enumerate(read_jsonl(src, allow_torn_tail=True)):
        if shard is not None and not in_shard(row.get("id"), shard):
            continue
        if (size := _text_bytes(row)) > max_bytes:
            row = {**{k: v for k, v in row.items() if k not in TEXT_FIELDS}, "_oversize": size}
        chunk.append((n, row))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def filter_shard(cfg: FilterConfig, src: Path, dest: Path, benchmarks: list, shard: tuple[int, int] | None) -> dict:
    """Stages 1-4, verify and selection over the shard's rows, streamed; dedup is left to `merge`. Writes
    dest/{kept,rejected,prompts}.jsonl (kept rows are the candidates dedup may still reject) and returns the
    shard's report."""
    start = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    keywords = safety.load_keywords(cfg.safety_keywords or None) if cfg.safety else None
    index = dedup.Contamination.build_index(benchmarks, n=cfg.decontam_ngram) if benchmarks else None
    checks = RowChecks(
        cfg.min_tokens, cfg.max_tokens, cfg.require_think, cfg.check_language, cfg.max_repetition,
        cfg.max_foreign_share, keywords, index, cfg.decontam_ngram,
    )  # fmt: skip
    workers = cfg.workers or os.cpu_count() or 1
    # prompts already in PROMPTS (their first row that passed stages 1-4: dedup's order), by 8-byte id hash
    written: set[int] = set()
    view: list[dict] = []  # selection's compact facts per verified row
    selecting = cfg.min_pass_rate > 0.0 or cfg.max_pass_rate < 1.0 or bool(cfg.max_per_prompt)
    work = dest / ".verified.jsonl.tmp"  # rows that reached verification, with their verdicts
    rejected_tmp = dest / (REJECTED + ".tmp")
    bar = tqdm(desc="filter", unit="row", dynamic_ncols=True, mininterval=1.0)
    batch: list[tuple[int, dict]] = []
    with (
        ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(checks,)) as pool,
        open(rejected_tmp, "w", encoding="utf-8") as rejected,
        open(work, "w", encoding="utf-8") as verified,
        open(dest / PROMPTS, "w", encoding="utf-8") as prompts,
    ):

        def write_rejected(row: dict, reason: str, detail: str = "") -> None:
            row.setdefault("correct", False)
            row["reject_reason"] = reason
            if detail:
                row["reject_detail"] = detail
            rejected.write(json.dumps(row, ensure_ascii=False) + "\n")

        def flush_batch() -> None:
            for (n, row), verdict in zip(batch, _verify_batch(cfg, batch, tally), strict=True):
                row.update(correct=verdict.correct, verify_reason=verdict.reason, extracted=verdict.extracted)
                verified.write(json.dumps({"_row": n, **row}, ensure_ascii=False) + "\n")
                if selecting:  # selection's facts are the one per-row state: kept only when selection is on
                    view.append(_selection_facts(n, row, cfg))
            batch.clear()

        def take(chunk: list[tuple[int, dict]], results: tuple) -> None:
            outcomes, clock = results
            for stage, seconds in clock.items():
                tally.time(stage, seconds)
            review: list[tuple[int, dict, list]] = []
            for (n, row), (stage, reason, detail, hits) in zip(chunk, outcomes, strict=True):
                tally.rows += 1
                if stage:
                    tally.reject(stage, reason)
                    if reason == "contaminated" and len(tally.matches) < 200:
                        bench, problem, shared = hits
                        tally.matches.append(
                            {"id": row.get("id"), "benchmark": bench, "problem": problem, "shared_ngrams": shared}
                        )
                    write_rejected(row, reason, detail)
                elif hits:
                    review.append((n, row, hits))
                else:
                    _alive(n, row)
            if review:
                tally.flagged += len(review)
                verdicts = [(None, "")] * len(review)
                if cfg.review_url:
                    items = [(row["problem"], row["completion"]) for _, row, _ in review]
                    verdicts = safety.review_many(items, cfg.review_url, cfg.review_model)
                    tally.reviewed += len(review)
                for (n, row, hits), (safe, note) in zip(review, verdicts, strict=True):
                    if safe is True:  # the reviewer cleared a keyword hit
                        _alive(n, row)
                        continue
                    category, word = hits[0]
                    tally.reject("safety", f"safety: {category}")
                    write_rejected(
                        row, f"safety: {category}", f"keyword {word!r}" + (f"; reviewer: {note}" if note else "")
                    )
            bar.update(len(chunk))
            bar.set_postfix_str(stage_rates(tally), refresh=False)

        def _alive(n: int, row: dict) -> None:
            pid, key = str(row["id"]), _id_hash(row["id"])
            if key not in written:
                written.add(key)
                prompts.write(json.dumps({"row": n, "id": pid, "problem": row["problem"]}, ensure_ascii=False) + "\n")
            batch.append((n, row))
            if len(batch) >= VERIFY_BATCH:
                flush_batch()

        inflight: list[tuple[list, Future]] = []
        for chunk in _read_numbered(src, shard, int(cfg.max_row_mb * (1 << 20))):
            big = [stub for _, stub in chunk if "_oversize" in stub]
            chunk = [c for c in chunk if "_oversize" not in c[1]]
            for stub in big:
                tally.rows += 1
                tally.reject("malformed", "row_too_large")
                size = stub.pop("_oversize")
                detail = (
                    f"{size / (1 << 20):.1f} MiB of text, over --max-row-mb {cfg.max_row_mb:g}; its text is left out"
                )
                write_rejected(stub, "row_too_large", detail)
            if not chunk:
                continue
            inflight.append((chunk, pool.submit(check_chunk, [r for _, r in chunk])))
            while len(inflight) > 2 * workers:  # bounded: memory O(workers x CHUNK rows)
                c, fut = inflight.pop(0)
                take(c, fut.result())
        for c, fut in inflight:
            take(c, fut.result())
        flush_batch()
    bar.close()
    if tally.rows == 0:
        raise DistillError(f"{src}: no rows to filter" + (f" in shard {shard[0]}/{shard[1]}" if shard else ""))
    # Selection over the verified rows (per prompt: exact within a shard), then the candidates are written
    t0 = time.monotonic()
    drop = _selection(cfg, view, tally)
    tally.time("selection", time.monotonic() - t0) if drop is not None else None
    with open(dest / (KEPT + ".tmp"), "w", encoding="utf-8") as kept, open(rejected_tmp, "a", encoding="utf-8") as rej:
        for row in read_jsonl(work):
            n = row["_row"]
            if not row["correct"]:
                tally.reject("verify", row["verify_reason"])
                rej.write(json.dumps({**row, "reject_reason": row["verify_reason"]}, ensure_ascii=False) + "\n")
            elif drop and n in drop:
                reason, detail = drop[n]
                tally.reject("selection", reason)
                rej.write(
                    json.dumps({**row, "reject_reason": reason, "reject_detail": detail}, ensure_ascii=False) + "\n"
                )
            else:
                kept.write(json.dumps(row, ensure_ascii=False) + "\n")
    work.unlink()
    for name in (KEPT, REJECTED):
        (dest / (name + ".tmp")).replace(dest / name)
    return _shard_report(tally, cfg, benchmarks, shard, time.monotonic() - start)


def _selection_facts(n: int, row: dict, cfg: FilterConfig) -> dict:
    """What selection needs of a verified row, without its text (the random draw keys on a digest of it)."""
    facts = {"_row": n, "id": row["id"], "sample": row.get("sample"), "correct": bool(row["correct"])}
    facts["completion_tokens"] = row.get("completion_tokens")
    if cfg.max_per_prompt and cfg.selection == "random":
        facts["completion"] = zlib.crc32(row["completion"].encode("utf-8", "surrogatepass"))
    return facts


def _selection(cfg: FilterConfig, view: list[dict], tally: Tally) -> dict[int, tuple[str, str]] | None:
    """Row number -> (reason, detail) of the verified rows selection drops; None when selection is off."""
    if cfg.min_pass_rate <= 0.0 and cfg.max_pass_rate >= 1.0 and not cfg.max_per_prompt:
        return None
    drop: dict[int, tuple[str, str]] = {}
    if cfg.min_pass_rate > 0.0 or cfg.max_pass_rate < 1.0:
        _, dropped, rates = pass_rate_filter(view, cfg.min_pass_rate, cfg.max_pass_rate)
        for r in dropped:
            if r["correct"]:
                drop[r["_row"]] = ("pass_rate_out_of_range", f"prompt pass rate {rates[str(r['id'])]:.2f}")
    if cfg.max_per_prompt:
        candidates = [r for r in view if r["correct"] and r["_row"] not in drop]
        _, dropped = select_per_prompt(candidates, cfg.max_per_prompt, cfg.selection, seed=cfg.seed)
        for r in dropped:
            drop[r["_row"]] = ("over_max_per_prompt", f"kept the {cfg.selection} {cfg.max_per_prompt}")
    return drop


def _verify_batch(cfg: FilterConfig, batch: list[tuple[int, dict]], tally: Tally) -> list[Verdict]:
    """Verdicts for a batch of rows, by each row's verifier."""
    rows = [r for _, r in batch]
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_kind[verifier_for(row)].append(i)
    tally.verifiers.update({k: len(v) for k, v in by_kind.items()})
    verdicts: dict[int, Verdict] = {}
    t0 = time.monotonic()
    if idx := by_kind.get("math"):
        items = [(str(rows[i]["answer"]), rows[i]["completion"], rows[i].get("finish_reason")) for i in idx]
        workers = cfg.workers or os.cpu_count() or 1
        found = verify_many(items, timeout=cfg.timeout, workers=workers, require_boxed=cfg.require_boxed)
        verdicts.update(zip(idx, found, strict=True))
    for i in by_kind.get("multiple_choice", []):
        verdicts[i] = verify_choice(str(rows[i]["answer"]), rows[i]["completion"], rows[i].get("finish_reason"))
    if idx := by_kind.get("code"):
        tally.sandbox = describe_isolation()  # e.g. netns+...: what keeps the code off the network
        verdicts.update(_verify_code(cfg, rows, idx))
    if idx := by_kind.get("judge"):
        verdicts.update(_verify_judge(cfg, rows, idx))
    tally.time("verify", time.monotonic() - t0)
    tally.slowest_verify = max([tally.slowest_verify, *(v.seconds for v in verdicts.values())])
    return [verdicts[i] for i in range(len(rows))]


def _verify_code(cfg: FilterConfig, rows: list[dict], idx: list[int]) -> dict[int, Verdict]:
    def one(i: int) -> Verdict:
        return verify_code(
            rows[i]["completion"],
            rows[i]["tests"],
            rows[i].get("finish_reason"),
            cpu_seconds=cfg.code_timeout,
            wall_seconds=cfg.code_timeout * 2,
            memory_mb=cfg.code_memory_mb,
        )

    # each check is its own sandboxed process: threads only wait on them
    with ThreadPoolExecutor(max_workers=cfg.workers or os.cpu_count() or 1) as pool:
        return dict(zip(idx, pool.map(one, idx), strict=True))


def _verify_judge(cfg: FilterConfig, rows: list[dict], idx: list[int]) -> dict[int, Verdict]:
    if not cfg.judge_url:
        return {i: Verdict(False, "unverifiable", "", 0.0) for i in idx}
    items = [(rows[i]["problem"], str(rows[i]["answer"]), final_part(rows[i]["completion"]) or "") for i in idx]
    return dict(zip(idx, judge_many(items, cfg.judge_url, cfg.judge_model), strict=True))


def _shard_report(tally: Tally, cfg: FilterConfig, benchmarks: list, shard, seconds: float) -> dict:
    stages = {}
    for name in (*ROW_STAGES, "verify", "selection"):
        if name in tally.stages:
            s = tally.stages[name]
            stages[name] = {"seconds": round(s["seconds"], 3), "rejected": s["rejected"], "reasons": dict(s["reasons"])}
    if "safety" in stages:
        stages["safety"].update(flagged=tally.flagged, reviewed=tally.reviewed)
    if benchmarks or cfg.decontam_skip:
        stages.setdefault("decontamination", {"seconds": 0.0, "rejected": 0, "reasons": {}})
        stages["decontamination"].update(
            ngram=cfg.decontam_ngram,
            benchmarks={name: len(problems) for name, problems in benchmarks},
            skipped={n: "--decontam-skip" for n in cfg.decontam_skip},
            matches=_unique_by_id(tally.matches),
        )
    if "verify" in stages:
        stages["verify"]["verifiers"] = dict(sorted(tally.verifiers.items()))
        if tally.sandbox:
            stages["verify"]["sandbox"] = tally.sandbox
    return {
        "rows": tally.rows,
        "shard": list(shard) if shard else None,
        "stages": stages,
        "slowest_verify_seconds": round(tally.slowest_verify, 3),
        "seconds": round(seconds, 2),
    }


# --------------------------------------------------------------------------------------------------
# Merge: dedup across prompts, then the final outputs


class PromptFiles:
    """The shards' prompts files read as one list in row order, without holding it: `texts()` streams the
    problems (a k-way merge of the files, each already in row order) and records each prompt's file and byte
    offset (10 bytes a prompt), so `text(i)` and `id(i)` read prompt i back when dedup needs it again."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.files: list = []
        try:
            for p in paths:
                self.files.append(open(p, "rb"))  # noqa: SIM115 - closed by __exit__
        except OSError as e:
            self.__exit__()
            raise DistillError(f"{e.filename}: cannot be read ({e.strerror})") from e
        self.where_file, self.where_offset = array("h"), array("q")

    def _lines(self, f: int) -> Iterator[tuple[int, int, int, str]]:
        handle, offset = self.files[f], 0
        for number, line in enumerate(iter(handle.readline, b""), 1):
            try:
                row = json.loads(line)
                item = (int(row["row"]), f, offset, str(row["problem"]))
            except (ValueError, KeyError, TypeError) as e:
                raise DistillError(
                    f"{self.paths[f]}, line {number}: not a prompts line of `distill filter --shard` ({e}); "
                    "filter that shard again"
                ) from e
            yield item
            offset += len(line)

    def texts(self) -> Iterator[str]:
        for _, f, offset, problem in heapq.merge(*(self._lines(f) for f in range(len(self.files)))):
            self.where_file.append(f)
            self.where_offset.append(offset)
            yield problem

    def _row(self, i: int) -> dict:
        handle = self.files[self.where_file[i]]
        back = handle.tell()
        handle.seek(self.where_offset[i])
        row = json.loads(handle.readline())
        handle.seek(back)  # the merge is still reading this file
        return row

    def text(self, i: int) -> str:
        return self._row(i)["problem"]

    def id(self, i: int) -> str:
        return str(self._row(i)["id"])

    def __enter__(self) -> PromptFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.files:
            handle.close()


def _id_hash(pid: object) -> int:
    return int.from_bytes(hashlib.blake2b(str(pid).encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _distinct(hashes: array) -> int:
    return int(np.unique(np.frombuffer(hashes, dtype=np.uint64)).size) if hashes else 0


def merge(cfg: FilterConfig, shards: list[Path], out: Path, source: str) -> dict:
    """Dedup over every shard's prompts in input order (the same algorithm one run applies), then kept and
    rejected rows with their final reasons, report.json and report.md in `out`."""
    start = time.monotonic()
    reports = []
    for d in shards:
        if not (d / PROMPTS).is_file() or not (d / "report.json").is_file():
            raise DistillError(f"{d} is not a `distill filter --shard` output (no {PROMPTS} or report.json)")
        reports.append(json.loads((d / "report.json").read_text()))
    dup_of: dict[str, tuple[str, float]] = {}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if cfg.dedup != "none":
        with PromptFiles([d / PROMPTS for d in shards]) as reps:
            found = dedup.find_duplicates(
                reps.texts(), reps.text, exact=True, near=cfg.dedup == "near", threshold=cfg.dedup_threshold,
                folder=out,
            )  # fmt: skip
            dup_of = {reps.id(k): (reps.id(v), sim) for k, (v, sim) in found.items()}
    dedup_seconds = time.monotonic() - t0
    counts = {"dedup": Counter()}
    taken: dict[str, Counter] = {"verify": Counter(), "selection": Counter()}  # rejections dedup takes over
    by_level: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    by_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    # distinct prompts, and those with a kept sample: 8-byte hashes of the ids, 8 bytes a row, counted at the end
    all_ids, kept_ids = array("Q"), array("Q")
    reasons: Counter = Counter()
    kept_n = rejected_n = 0
    with (
        open(out / (KEPT + ".tmp"), "w", encoding="utf-8") as kept,
        open(out / (REJECTED + ".tmp"), "w", encoding="utf-8") as rejected,
    ):
        for d in shards:
            for name in (KEPT, REJECTED):
                for row in read_jsonl(d / name):
                    row.pop("_row", None)
                    hit = dup_of.get(str(row.get("id")))
                    # dedup comes before verify and selection: their verdicts give way to it
                    if hit and (name == KEPT or "verify_reason" in row):
                        if name == REJECTED:  # verify or selection had rejected it: dedup does, earlier
                            stage = "verify" if row["reject_reason"] == row.get("verify_reason") else "selection"
                            taken[stage][row["reject_reason"]] += 1
                        for key in (*VERIFY_FIELDS, "reject_reason", "reject_detail"):
                            row.pop(key, None)
                        row.update(
                            correct=False,
                            reject_reason="duplicate_prompt" if hit[1] >= 1.0 else "near_duplicate_prompt",
                        )
                        row["reject_detail"] = f"of {hit[0]} (similarity {hit[1]:.2f})"
                        counts["dedup"][row["reject_reason"]] += 1
                    ok = "reject_reason" not in row
                    (kept if ok else rejected).write(json.dumps(row, ensure_ascii=False) + "\n")
                    kept_n += ok
                    rejected_n += not ok
                    if not ok:
                        reasons[row["reject_reason"]] += 1
                    lvl = row.get("level", 0) if isinstance(row.get("level"), int) else 0
                    dom = str(row.get("domain") or "math")
                    for table, key in ((by_level, lvl), (by_domain, dom)):
                        table[key][0] += ok
                        table[key][1] += 1
                    pid = _id_hash(row.get("id"))
                    all_ids.append(pid)
                    if ok:
                        kept_ids.append(pid)
    for name in (KEPT, REJECTED):
        (out / (name + ".tmp")).replace(out / name)
    stages = _merge_stages(reports, counts["dedup"], dedup_seconds, cfg, taken)
    total = kept_n + rejected_n
    report = {
        "total": total,
        "kept": kept_n,
        "rejected": rejected_n,
        "pass_rate": kept_n / total if total else 0.0,
        "prompts": _distinct(all_ids),
        "prompts_with_a_kept_sample": _distinct(kept_ids),
        "reject_reasons": dict(reasons.most_common()),
        "by_domain": {k: {"kept": v[0], "total": v[1], "pass_rate": v[0] / v[1]} for k, v in sorted(by_domain.items())},
        "pass_rate_by_level": {
            str(k): {"kept": v[0], "total": v[1], "pass_rate": v[0] / v[1]} for k, v in sorted(by_level.items())
        },
        "seconds": round(time.monotonic() - start + sum(r["seconds"] for r in reports), 2),
        "input": source,
        "shards": len(shards),
        "stages": stages,
        "slowest_verify_seconds": max((r["slowest_verify_seconds"] for r in reports), default=0.0),
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    return report


def _merge_stages(
    reports: list[dict], dedup_counts: Counter, dedup_seconds: float, cfg: FilterConfig, taken: dict[str, Counter]
) -> dict:
    """The shards' stage tables added up, with dedup (done here) in its place and verify/selection counts
    less the rows dedup took from them."""
    order = (*ROW_STAGES, "dedup", "verify", "selection")
    merged: dict[str, dict] = {}
    for r in reports:
        for name, s in r["stages"].items():
            m = merged.setdefault(name, {"seconds": 0.0, "rejected": 0, "reasons": Counter()})
            m["seconds"] += s["seconds"]
            m["rejected"] += s["rejected"]
            m["reasons"].update(s["reasons"])
            for key, value in s.items():
                if key in ("flagged", "reviewed"):
                    m[key] = m.get(key, 0) + value
                elif key == "verifiers":
                    m.setdefault(key, Counter()).update(value)
                elif key == "matches":
                    m[key] = _unique_by_id([*m.get(key, []), *value])[:200]
                elif key not in ("seconds", "rejected", "reasons"):
                    m[key] = value
    for name, lost in taken.items():
        if name in merged and lost:
            merged[name]["reasons"] = Counter(merged[name]["reasons"]) - lost
            merged[name]["rejected"] -= sum(lost.values())
    if cfg.dedup != "none":
        merged["dedup"] = {
            "seconds": round(dedup_seconds, 3), "rejected": sum(dedup_counts.values()), "reasons": dedup_counts,
            "method": cfg.dedup, "threshold": cfg.dedup_threshold,
        }  # fmt: skip
    out = {}
    for name in order:
        if name in merged:
            m = merged[name]
            out[name] = {**m, "seconds": round(m["seconds"], 3), "reasons": dict(Counter(m["reasons"]).most_common())}
            if "verifiers" in m:
                out[name]["verifiers"] = dict(sorted(m["verifiers"].items()))
    return out


# --------------------------------------------------------------------------------------------------
# The command


def run(cfg: FilterConfig, inputs: str | Path | list[str]) -> dict:
    """`distill filter INPUT` (one traces file or generate folder), `--shard i/N` (one shard of it), or
    `--merge true SHARD_DIR...` (the shards' outputs into the final ones). Returns the report."""
    _check_options(cfg)
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out = Path(cfg.output)
    if cfg.merge:
        shards = [Path(p) for p in paths]
        for d in shards:
            if not d.is_dir():
                raise DistillError(f"--merge takes the output folders of `distill filter --shard`; {d} is not a folder")
        if any(d.resolve() == out.resolve() for d in shards):
            raise DistillError(f"--output {out} is one of the shards being merged; choose another folder")
        report = merge(cfg, shards, out, ", ".join(str(d) for d in shards))
        return _finish(cfg, out, report, {"input": [str(d) for d in shards]})
    if len(paths) != 1:
        raise DistillError(
            "distill filter takes one input (a traces file or a generate folder); several only with --merge true"
        )
    src = input_file(paths[0])
    if next(read_jsonl(src, allow_torn_tail=True), None) is None:
        raise DistillError(f"{src}: no rows to filter")
    if out.resolve() == src.parent.resolve() and src.name in (KEPT, REJECTED):
        raise DistillError(f"--output {out} would overwrite the input {src}; choose another folder")
    shard = parse_shard(cfg.shard)
    benchmarks = decontamination_sources(cfg)  # before any stage: an unloadable benchmark stops the run here
    if shard is not None:
        report = {**filter_shard(cfg, src, out, benchmarks, shard), "input": str(src)}
        write_json(out / "report.json", report)
        config_mod.save(cfg, out, extra={"input": str(src)})
        print(
            f"[distill] filter: shard {shard[0]}/{shard[1]}: {report['rows']} rows -> {out}; merge the shards with "
            f"`distill filter --merge true <shard folders> --output <folder>`",
            flush=True,
        )
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-work-") as tmp:
        write_json(Path(tmp) / "report.json", filter_shard(cfg, src, Path(tmp), benchmarks, None))
        report = merge(cfg, [Path(tmp)], out, str(src))
    return _finish(cfg, out, report, {"input": str(src)})


def _finish(cfg: FilterConfig, out: Path, report: dict, record: dict) -> dict:
    config_mod.save(cfg, out, extra=record)
    print(report_table(report), flush=True)
    print(
        f"[distill] filter: kept {report['kept']}/{report['total']} ({report['pass_rate']:.1%}) -> {out}/{KEPT}; "
        f"slowest verification {report['slowest_verify_seconds']:.2f} s; report: {out}/report.md",
        flush=True,
    )
    if cfg.push_to_hub:
        url = push_dataset(out, cfg.push_to_hub)
        print(f"[distill] pushed {out} to {url}", flush=True)
    return report


# --------------------------------------------------------------------------------------------------
# Report


def _md_table(headers: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def report_markdown(report: dict) -> str:
    stages = [
        [name, s["rejected"], ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "-", f"{s['seconds']:.2f}"]
        for name, s in report["stages"].items()
    ]
    parts = [
        f"# distill filter report\n\nInput: `{report['input']}`\n\n"
        f"Kept **{report['kept']} of {report['total']}** rows ({report['pass_rate']:.1%}); "
        f"{report['prompts_with_a_kept_sample']} of {report['prompts']} prompts keep at least one sample.",
        "## Stages\n\n" + _md_table(["stage", "rejected", "reasons", "seconds"], stages),
        "## By domain\n\n"
        + _md_table(
            ["domain", "kept", "total", "pass rate"],
            [[d, v["kept"], v["total"], f"{v['pass_rate']:.1%}"] for d, v in report["by_domain"].items()],
        ),
        "## By difficulty level\n\n"
        + _md_table(
            ["level", "kept", "total", "pass rate"],
            [[lvl, v["kept"], v["total"], f"{v['pass_rate']:.1%}"] for lvl, v in report["pass_rate_by_level"].items()],
        ),
    ]
    decon = report["stages"].get("decontamination")
    if decon and decon.get("matches"):
        parts.append(
            "## Contamination matches\n\n"
            + _md_table(
                ["row id", "benchmark", "benchmark problem", "shared n-grams"],
                [[m["id"], m["benchmark"], m["problem"], m["shared_ngrams"]] for m in decon["matches"]],
            )
        )
    if decon and decon.get("skipped"):
        parts.append("Decontamination skipped: " + "; ".join(f"{k} ({v})" for k, v in decon["skipped"].items()))
    return "\n\n".join(parts) + "\n"


def report_table(report: dict) -> str:
    """A compact plain-text table for the terminal."""
    lines = [f"{'stage':<17}{'rejected':>9}  reasons"]
    for name, s in report["stages"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "-"
        lines.append(f"{name:<17}{s['rejected']:>9}  {reasons}  ({s['seconds']:.1f} s)")
    lines.append(f"{'kept':<17}{report['kept']:>9}  of {report['total']} ({report['pass_rate']:.1%})")
    return "\n".join(lines)
