"""`distill filter`: curate teacher traces so only verified-correct, clean, uncontaminated, safe ones
reach SFT.

    distill filter runs/gen --output runs/filtered
    distill filter runs/gen --output runs/grpo-data --min-pass-rate 0.1 --max-pass-rate 0.9

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
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from distill.common import config as config_mod
from distill.common.errors import DistillError
from distill.common.hub import push_dataset
from distill.common.records import TRACES, check_input_file, read_jsonl, write_json, write_jsonl
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


class _Stages:
    """Bookkeeping: which stage rejected which row, why, and how long each stage took."""

    def __init__(self, n: int) -> None:
        self.reasons = [""] * n
        self.details = [""] * n
        self.report: dict[str, dict] = {}

    def alive(self) -> list[int]:
        return [i for i, r in enumerate(self.reasons) if not r]

    def reject(self, i: int, reason: str, detail: str = "") -> None:
        if not self.reasons[i]:
            self.reasons[i], self.details[i] = reason, detail

    @contextlib.contextmanager
    def stage(self, name: str, **info) -> Iterator[None]:
        before = Counter(r for r in self.reasons if r)
        t0 = time.monotonic()
        yield
        after = Counter(r for r in self.reasons if r)
        new = after - before
        self.report[name] = {
            "seconds": round(time.monotonic() - t0, 3),
            "rejected": sum(new.values()),
            "reasons": dict(new.most_common()),
            **info,
        }


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
    if not cfg.timeout > 0:
        raise DistillError(f"--timeout must be > 0 seconds, got {cfg.timeout}")
    if not cfg.code_timeout > 0:
        raise DistillError(f"--code-timeout must be > 0 seconds, got {cfg.code_timeout}")
    if cfg.code_memory_mb < 64:
        raise DistillError(f"--code-memory-mb must be at least 64 (MiB), got {cfg.code_memory_mb}")
    if cfg.workers < 0:
        raise DistillError(f"--workers must be 0 (one per core) or more, got {cfg.workers}")


def run(cfg: FilterConfig, input_path: str) -> dict:
    _check_options(cfg)
    src = input_file(input_path)
    rows = list(read_jsonl(src, allow_torn_tail=True))
    if not rows:
        raise DistillError(f"{src}: no rows to filter")
    benchmarks = decontamination_sources(cfg)  # before any stage: an unloadable benchmark stops the run here
    out = Path(cfg.output)
    if out.resolve() == src.parent.resolve() and src.name in ("kept.jsonl", "rejected.jsonl"):
        raise DistillError(f"--output {out} would overwrite the input {src}; choose another folder")
    start = time.monotonic()
    st = _Stages(len(rows))

    with st.stage("malformed"):
        for i, row in enumerate(rows):
            if why := malformed(row):
                st.reject(i, why)

    _format_stage(cfg, rows, st)
    _safety_stage(cfg, rows, st)
    _decontamination_stage(cfg, rows, st, benchmarks)
    _dedup_stage(cfg, rows, st)
    verdicts = _verify_stage(cfg, rows, st)
    _selection_stage(cfg, rows, st)

    kept, rejected = [], []
    for row, why, detail in zip(rows, st.reasons, st.details, strict=True):
        if why:
            row.setdefault("correct", False)
            row["reject_reason"] = why
            if detail:
                row["reject_detail"] = detail
            rejected.append(row)
        else:
            kept.append(row)

    report = make_report(rows, kept, rejected, time.monotonic() - start)
    report["input"] = str(src)
    report["stages"] = st.report
    report["slowest_verify_seconds"] = round(max((v.seconds for v in verdicts.values()), default=0.0), 3)
    write_jsonl(out / "kept.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    config_mod.save(cfg, out, extra={"input": str(src)})
    print(report_table(report), flush=True)
    print(
        f"[distill] filter: kept {len(kept)}/{len(rows)} ({report['pass_rate']:.1%}) -> {out}/kept.jsonl; "
        f"slowest verification {report['slowest_verify_seconds']:.2f} s; report: {out}/report.md",
        flush=True,
    )
    if cfg.push_to_hub:
        url = push_dataset(out, cfg.push_to_hub)
        print(f"[distill] pushed {out} to {url}", flush=True)
    return report


# --------------------------------------------------------------------------------------------------
# The stages


def _format_stage(cfg: FilterConfig, rows: list[dict], st: _Stages) -> None:

    with st.stage("format"):
        for i in st.alive():
            why = check_format(
                rows[i],
                min_tokens=cfg.min_tokens,
                max_tokens=cfg.max_tokens,
                require_think=cfg.require_think,
                check_language=cfg.check_language,
                max_repetition=cfg.max_repetition,
                max_foreign_share=cfg.max_foreign_share,
            )
            if why:
                st.reject(i, why)


def _safety_stage(cfg: FilterConfig, rows: list[dict], st: _Stages) -> None:
    if not cfg.safety:
        return

    keywords = safety.load_keywords(cfg.safety_keywords or None)
    flagged: dict[int, list[tuple[str, str]]] = {}
    reviewed = 0
    with st.stage("safety", reviewer=cfg.review_url or None) as _:
        for i in st.alive():
            text = f"{rows[i]['problem']}\n{rows[i]['completion']}"
            hits = safety.screen(text, keywords)
            if hits:
                flagged[i] = hits
        verdicts: dict[int, tuple[bool | None, str]] = {}
        if flagged and cfg.review_url:
            idx = sorted(flagged)
            items = [(rows[i]["problem"], rows[i]["completion"]) for i in idx]
            verdicts = dict(zip(idx, safety.review_many(items, cfg.review_url, cfg.review_model), strict=True))
            reviewed = len(idx)
        for i, hits in flagged.items():
            category, word = hits[0]
            safe, note = verdicts.get(i, (None, ""))
            if safe is True:
                continue  # the reviewer cleared a keyword hit
            detail = f"keyword {word!r}" + (f"; reviewer: {note}" if note else "")
            st.reject(i, f"safety: {category}", detail)
    st.report["safety"].update(flagged=len(flagged), reviewed=reviewed)


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


def _decontamination_stage(
    cfg: FilterConfig, rows: list[dict], st: _Stages, loaded: list[tuple[str, list[str]]]
) -> None:
    skipped = {n: "--decontam-skip" for n in cfg.decontam_skip}
    if not loaded:
        if skipped:
            st.report["decontamination"] = {
                "seconds": 0.0,
                "rejected": 0,
                "reasons": {},
                "benchmarks": {},
                "skipped": skipped,
            }
        return
    with st.stage("decontamination", ngram=cfg.decontam_ngram):
        index = dedup.Contamination.build_index(loaded, n=cfg.decontam_ngram)
        matches: list[dict] = []
        checked: dict[str, list] = {}
        for i in st.alive():
            problem = rows[i]["problem"]
            if problem not in checked:
                checked[problem] = index.check(problem)
            if hits := checked[problem]:
                best = max(hits, key=lambda m: m.count)
                shared = f"{best.count} shared {cfg.decontam_ngram}-grams" if not best.exact else "identical text"
                st.reject(i, "contaminated", f"{best.benchmark} problem {best.index} ({shared})")
                if len(matches) < 200:
                    matches.append(
                        {
                            "id": rows[i]["id"],
                            "benchmark": best.benchmark,
                            "problem": best.index,
                            "shared_ngrams": best.count,
                        }
                    )
    st.report["decontamination"].update(
        benchmarks={name: len(problems) for name, problems in loaded}, skipped=skipped, matches=_unique_by_id(matches)
    )
    if skipped:
        print(
            f"[distill] filter: decontamination checked {', '.join(n for n, _ in loaded)}; left out by "
            f"--decontam-skip: {', '.join(skipped)}",
            flush=True,
        )


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


def _dedup_stage(cfg: FilterConfig, rows: list[dict], st: _Stages) -> None:
    if cfg.dedup == "none":
        return

    with st.stage("dedup", method=cfg.dedup, threshold=cfg.dedup_threshold):
        alive = st.alive()
        # one representative row per prompt id: duplicates are across prompts, not among a prompt's samples
        first_of: dict[str, int] = {}
        for i in alive:
            first_of.setdefault(str(rows[i]["id"]), i)
        reps = list(first_of.values())
        rep_rows = [rows[i] for i in reps]
        dup_of: dict[int, tuple[int, float]] = {k: (v, 1.0) for k, v in dedup.exact_duplicates(rep_rows).items()}
        if cfg.dedup == "near":
            for k, v in dedup.near_duplicates(rep_rows, threshold=cfg.dedup_threshold).items():
                dup_of.setdefault(k, v)
        dup_ids = {str(rep_rows[k]["id"]): (str(rep_rows[v]["id"]), sim) for k, (v, sim) in dup_of.items()}
        for i in alive:
            hit = dup_ids.get(str(rows[i]["id"]))
            if hit:
                reason = "duplicate_prompt" if hit[1] >= 1.0 else "near_duplicate_prompt"
                st.reject(i, reason, f"of {hit[0]} (similarity {hit[1]:.2f})")


def _verify_stage(cfg: FilterConfig, rows: list[dict], st: _Stages) -> dict[int, Verdict]:
    alive = st.alive()
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i in alive:
        by_kind[verifier_for(rows[i])].append(i)
    verdicts: dict[int, Verdict] = {}
    sandbox = ""
    with st.stage("verify", verifiers={k: len(v) for k, v in sorted(by_kind.items())}):
        with tqdm(total=len(alive), desc="verify", unit="sample", dynamic_ncols=True, mininterval=1.0) as bar:
            if idx := by_kind.get("math"):
                items = [(str(rows[i]["answer"]), rows[i]["completion"], rows[i].get("finish_reason")) for i in idx]
                workers = cfg.workers or os.cpu_count() or 1
                verdicts.update(
                    zip(
                        idx,
                        verify_many(
                            items,
                            timeout=cfg.timeout,
                            workers=workers,
                            progress=bar.update,
                            require_boxed=cfg.require_boxed,
                        ),
                        strict=True,
                    )
                )
            for i in by_kind.get("multiple_choice", []):
                verdicts[i] = verify_choice(str(rows[i]["answer"]), rows[i]["completion"], rows[i].get("finish_reason"))
                bar.update(1)
            if idx := by_kind.get("code"):
                sandbox = describe_isolation()  # e.g. netns+...: what keeps the code off the network
                verdicts.update(_verify_code(cfg, rows, idx, bar.update))
            if idx := by_kind.get("judge"):
                verdicts.update(_verify_judge(cfg, rows, idx))
                bar.update(len(idx))
        for i, v in verdicts.items():
            rows[i]["correct"] = v.correct
            rows[i]["verify_reason"] = v.reason
            rows[i]["extracted"] = v.extracted
            if not v.correct:
                st.reject(i, v.reason)
    if sandbox:
        st.report["verify"]["sandbox"] = sandbox
    return verdicts


def _verify_code(cfg: FilterConfig, rows: list[dict], idx: list[int], progress) -> dict[int, Verdict]:

    def one(i: int) -> Verdict:
        v = verify_code(
            rows[i]["completion"],
            rows[i]["tests"],
            rows[i].get("finish_reason"),
            cpu_seconds=cfg.code_timeout,
            wall_seconds=cfg.code_timeout * 2,
            memory_mb=cfg.code_memory_mb,
        )
        progress(1)
        return v

    # each check is its own sandboxed process: threads only wait on them
    with ThreadPoolExecutor(max_workers=cfg.workers or os.cpu_count() or 1) as pool:
        return dict(zip(idx, pool.map(one, idx), strict=True))


def _verify_judge(cfg: FilterConfig, rows: list[dict], idx: list[int]) -> dict[int, Verdict]:
    if not cfg.judge_url:
        return {i: Verdict(False, "unverifiable", "", 0.0) for i in idx}

    items = [(rows[i]["problem"], str(rows[i]["answer"]), final_part(rows[i]["completion"]) or "") for i in idx]
    return dict(zip(idx, judge_many(items, cfg.judge_url, cfg.judge_model), strict=True))


def _selection_stage(cfg: FilterConfig, rows: list[dict], st: _Stages) -> None:
    if cfg.min_pass_rate <= 0.0 and cfg.max_pass_rate >= 1.0 and not cfg.max_per_prompt:
        return

    with st.stage(
        "selection", min_pass_rate=cfg.min_pass_rate, max_pass_rate=cfg.max_pass_rate, max_per_prompt=cfg.max_per_prompt
    ):
        # pass rates over every sample of a prompt that reached verification
        verified = [i for i in range(len(rows)) if "verify_reason" in rows[i]]
        view = [{**rows[i], "_i": i, "correct": bool(rows[i].get("correct"))} for i in verified]
        if cfg.min_pass_rate > 0.0 or cfg.max_pass_rate < 1.0:
            _, dropped, rates = pass_rate_filter(view, cfg.min_pass_rate, cfg.max_pass_rate)
            for r in dropped:
                st.reject(r["_i"], "pass_rate_out_of_range", f"prompt pass rate {rates[str(r['id'])]:.2f}")
        if cfg.max_per_prompt:
            alive = set(st.alive())
            candidates = [r for r in view if r["_i"] in alive]
            _, dropped = select_per_prompt(candidates, cfg.max_per_prompt, cfg.selection, seed=cfg.seed)
            for r in dropped:
                st.reject(r["_i"], "over_max_per_prompt", f"kept the {cfg.selection} {cfg.max_per_prompt}")


# --------------------------------------------------------------------------------------------------
# Report


def make_report(rows: list[dict], kept: list[dict], rejected: list[dict], seconds: float) -> dict:
    by_level: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    by_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    prompts_solved: dict[str, bool] = {}
    for r in rows:
        ok = r.get("reject_reason") is None
        lvl = r.get("level", 0) if isinstance(r.get("level"), int) else 0
        by_level[lvl][0] += ok
        by_level[lvl][1] += 1
        dom = str(r.get("domain") or "math")
        by_domain[dom][0] += ok
        by_domain[dom][1] += 1
        pid = str(r.get("id"))
        prompts_solved[pid] = prompts_solved.get(pid, False) or ok
    return {
        "total": len(rows),
        "kept": len(kept),
        "rejected": len(rejected),
        "pass_rate": len(kept) / len(rows) if rows else 0.0,
        "prompts": len(prompts_solved),
        "prompts_with_a_kept_sample": sum(prompts_solved.values()),
        "reject_reasons": dict(Counter(r["reject_reason"] for r in rejected).most_common()),
        "by_domain": {k: {"kept": v[0], "total": v[1], "pass_rate": v[0] / v[1]} for k, v in sorted(by_domain.items())},
        "pass_rate_by_level": {
            str(k): {"kept": v[0], "total": v[1], "pass_rate": v[0] / v[1]} for k, v in sorted(by_level.items())
        },
        "seconds": round(seconds, 2),
    }


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
