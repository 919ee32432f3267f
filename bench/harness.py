"""Agreement with a recognised harness: the same answers scored by open-r1's accuracy reward and by distill.

    .venv/bin/python bench/harness.py                          # math-verify's cases + synthetic R1-style traces
    .venv/bin/python bench/harness.py --input runs/demo/gen    # also real traces (traces.jsonl or a generate folder)
    .venv/bin/python bench/harness.py --problems 20 --show 3   # fewer synthetic problems, fewer examples shown

Compares, answer by answer, distill's verdict (`verify_many`, the path `distill eval` and `distill filter`
take) under its two settings, the eval default (require_boxed=False) and the filter default
(require_boxed=True), with the verdict of open-r1's accuracy-reward recipe for GRPO, as open-r1
documents it (written here from that description, not copied): the gold parsed with
``math_verify.parse(gold, extraction_mode="first_match")``; the answer parsed with LaTeX extraction only
(normalisation: nits off, malformed operators off, basic LaTeX, equations, every box, units), boxes tried
first (boxed_match_priority=0) and nothing taken without an anchor (try_extract_without_anchor=False), first
match; correct when ``verify(gold_parsed, answer_parsed)``; a gold that parses to nothing is skipped.
(open-r1's rewards.py in early 2025 parsed the gold with LaTeX extraction only, so a bare "31" parsed to
nothing and was skipped, and called verify answer first; --early adds that form as a reference too.)
When TRL is installed, TRL's own `trl.rewards.accuracy_reward` (the same recipe, maintained in TRL) is
called as a second reference (its NormalizationConfig(units=True) equals the settings above, and it
uses math-verify's own timeouts). lighteval is not used: its releases depend on torch and pin
latex2sympy2_extended to a version math-verify 0.9 cannot run with.

Inputs: (1) tests/data/math_verify_cases.jsonl (math-verify's own test cases, gold vs prediction); (2)
synthetic traces of distill's built-in problems in the forms teachers write (one box, repeated and
corrected boxes, an unboxed last line, think blocks, wrong answers, a cut-off <think>); (3) --input, rows
with "answer" and "completion" (or "messages"). Per input it prints the agreement for each setting and
each reference, then the disagreements grouped by cause (no anchor for the reference, no box for the
filter, a box inside <think>, a cut-off trace, \\text{N unit}, malformed operators, ...) with the kinds
of answer involved and an example. The references read the whole completion (they know no <think>);
distill reads the part after the last </think>. Runs in well under a minute on 2 CPUs (about 10 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latex2sympy2_extended import NormalizationConfig  # noqa: E402
from math_verify import LatexExtractionConfig, parse, verify  # noqa: E402

from distill.common.records import read_jsonl  # noqa: E402
from distill.curation import filter as filter_  # noqa: E402
from distill.problems.tasks import builtin_problems  # noqa: E402
from distill.verification.answers import final_part, verify_many  # noqa: E402

CASES = ROOT / "tests" / "data" / "math_verify_cases.jsonl"
SETTINGS = {"eval": False, "filter": True}  # name -> require_boxed

# --------------------------------------------------------------------------------------------------
# Reference scorers


_OPEN_R1_ANSWER = [
    LatexExtractionConfig(
        normalization_config=NormalizationConfig(
            nits=False, malformed_operators=False, basic_latex=True, equations=True, boxed="all", units=True
        ),
        boxed_match_priority=0,
        try_extract_without_anchor=False,
    )
]


def open_r1_answer(completion: str) -> list:
    """The answer as the recipe parses it (also used to say why a reference disagrees)."""
    return parse(completion, _OPEN_R1_ANSWER, extraction_mode="first_match")


def open_r1(gold: str, completion: str) -> bool | None:
    """open-r1's accuracy reward as a verdict: None when the gold parses to nothing (the example is skipped)."""
    gold_parsed = parse(gold, extraction_mode="first_match")
    if not gold_parsed:
        return None
    try:
        return bool(verify(gold_parsed, open_r1_answer(completion)))
    except Exception:  # noqa: BLE001 - a verify failure scores 0, as in the recipe
        return False


def open_r1_early(gold: str, completion: str) -> bool | None:
    """open-r1's accuracy reward in its early 2025 form: the gold parsed with LaTeX extraction only, and
    verify called answer first (verify is asymmetric); an unparsable gold was rewarded 1 (skipped here)."""
    gold_parsed = parse(gold, [LatexExtractionConfig()], extraction_mode="first_match")
    if not gold_parsed:
        return None
    try:
        return bool(verify(open_r1_answer(completion), gold_parsed))
    except Exception:  # noqa: BLE001
        return False


def trl_reference() -> Callable[[str, str], bool | None] | None:
    try:
        from trl.rewards import accuracy_reward  # optional: TRL may not be installed
    except ImportError:
        return None

    def trl(gold: str, completion: str) -> bool | None:
        reward = accuracy_reward([[{"role": "assistant", "content": completion}]], [gold])[0]
        return None if reward is None else reward > 0.5

    return trl


# --------------------------------------------------------------------------------------------------
# Inputs: rows of {"kind", "gold", "completion", "finish_reason"}


def math_verify_cases() -> list[dict]:
    rows = []
    with CASES.open(encoding="utf-8") as fh:
        for line in fh:
            c = json.loads(line)
            rows.append({"kind": c["source"].split("::")[-1], "gold": c["gold"], "completion": c["pred"]})
    return rows


THINK = "<think>\n{steps}\n</think>\n\n"


def _steps(rng: random.Random, problem: str) -> str:
    first = problem.split(".")[0]
    lines = [f"Okay, let me read the problem again: {first}."]
    lines += [f"Step {k}: I work out part {k} and check the arithmetic." for k in range(1, rng.randint(3, 7))]
    return "\n".join(lines)


def _forms(a: str, wrong: str) -> dict[str, str]:
    """kind -> final part of a trace answering `a` (a wrong answer is `wrong`)."""
    return {
        "boxed": f"So the answer is $\\boxed{{{a}}}$.",
        "boxed_display": f"**Final Answer**\n\\[\n\\boxed{{{a}}}\n\\]",
        "boxed_units": f"She pays $\\boxed{{{a} \\text{{ dollars}}}}$ in total.",
        "boxed_text_units": f"The total is $\\boxed{{\\text{{{a} dollars}}}}$.",
        "boxed_twice": f"That gives $\\boxed{{{a}}}$.\n\n**Final Answer**\n$\\boxed{{{a}}}$",
        "boxed_corrected": f"At first I got $\\boxed{{{wrong}}}$, but I dropped a term. Redoing it: $\\boxed{{{a}}}$.",
        "unboxed_answer_is": f"The answer is {a}.",
        "unboxed_bold": f"**Answer:** {a}",
        "unboxed_display": f"Putting it together:\n$$\n{a}\n$$",
        "unboxed_inline": f"Therefore the final answer is ${a}$.",
        "wrong_boxed": f"So the answer is $\\boxed{{{wrong}}}$.",
        "wrong_unboxed": f"The answer is {wrong}.",
        "wrong_corrected": f"At first I got $\\boxed{{{a}}}$, but I dropped a term. Redoing it: $\\boxed{{{wrong}}}$.",
        "no_answer": "I could not finish the computation.",
    }


def synthetic_traces(n_problems: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for p in builtin_problems("train", n_problems, seed=seed):
        a, wrong = p["answer"], str(int(p["answer"]) + rng.choice([-2, -1, 1, 10]))
        think = THINK.format(steps=_steps(rng, p["problem"]))
        for kind, final in _forms(a, wrong).items():
            rows.append({"kind": kind, "gold": a, "completion": think + final})
        # think blocks: a box inside <think> that the final part overrides, or that is the only box
        think_box = THINK.format(steps=_steps(rng, p["problem"]) + f"\nMaybe it is $\\boxed{{{wrong}}}$? No.")
        rows.append(
            {"kind": "think_box_then_final_box", "gold": a, "completion": think_box + _forms(a, wrong)["boxed"]}
        )
        rows.append({"kind": "think_box_then_unboxed", "gold": a, "completion": think_box + f"The answer is {a}."})
        rows.append({"kind": "no_think_boxed", "gold": a, "completion": _forms(a, wrong)["boxed"]})
        cut = THINK.format(steps=_steps(rng, p["problem"])).split("</think>")[0] + f"so it is $\\boxed{{{a}}}$, let me"
        rows.append({"kind": "truncated_think", "gold": a, "completion": cut})
    return rows


def input_traces(path: str) -> list[dict]:
    rows = []
    for r in read_jsonl(filter_.input_file(path)):
        completion = r.get("completion")
        if completion is None:
            completion = next((m["content"] for m in reversed(r.get("messages", [])) if m["role"] == "assistant"), "")
        rows.append(
            {
                "kind": r.get("source") or r.get("domain") or "input",
                "gold": str(r.get("answer", "")),
                "completion": completion,
                "finish_reason": r.get("finish_reason"),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Scoring and the report


_MALFORMED = re.compile(r"\\[dt]?frac\s*\d|\\sqrt\s*\d")


def cause(row: dict, v, ref_correct: bool) -> tuple[str, str]:
    """Why distill's verdict v and a reference's differ: (a label to group by, a detail for the example)."""
    if v.reason == "truncated":
        return (
            "cut-off <think> (or finish_reason length): distill scores it truncated, the reference reads a box in it",
            "",
        )
    if not v.correct and v.reason == "no_answer" and ref_correct:
        return "no box: distill's filter demands one, the reference takes LaTeX after 'answer'/'final answer is'", ""
    if v.correct == ref_correct:
        return "other", ""
    completion = row["completion"]
    ref_answer = [x for x in open_r1_answer(completion) if isinstance(x, str)]
    detail = (
        f"reference read {ref_answer[-1][:40] if ref_answer else None!r}, distill {v.extracted[:40]!r} ({v.reason})"
    )
    if v.correct and not ref_answer:
        return (
            "no anchor for the reference: it reads LaTeX only after a box, 'answer' or 'final answer is'; "
            "distill also reads unanchored LaTeX and plain numbers (math-verify's defaults)",
            detail,
        )
    final = final_part(completion)
    if final is not None and final != completion:
        in_final = [x for x in open_r1_answer(final) if isinstance(x, str)]
        if in_final != ref_answer:
            return "a box inside <think>: the reference reads the whole text, distill the part after </think>", detail
    if ref_answer and ref_answer[-1].lstrip().startswith("\\text{"):
        return "\\text{N unit} in the box: math-verify keeps a symbol 'Nunit', distill normalises it to N", detail
    if ref_answer and _MALFORMED.search(ref_answer[-1]):
        return "malformed operators (\\frac94, \\sqrt 2): the recipe turns math-verify's fix for them off", detail
    side = "distill accepts, the reference does not" if v.correct else "the reference accepts, distill does not"
    return f"read differently ({side})", detail


def score(name: str, rows: list[dict], refs: dict[str, Callable], show: int, workers: int) -> dict:
    t0 = time.perf_counter()
    items = [(r["gold"], r["completion"], r.get("finish_reason")) for r in rows]
    distill = {s: verify_many(items, timeout=5.0, workers=workers, require_boxed=rb) for s, rb in SETTINGS.items()}
    ref_verdicts = {ref: [fn(r["gold"], r["completion"]) for r in rows] for ref, fn in refs.items()}
    seconds = time.perf_counter() - t0

    print(f"\n== {name}: {len(rows)} answers ({seconds:.1f} s)")
    summary: dict = {"input": name, "n": len(rows)}
    for ref, verdicts in ref_verdicts.items():
        scored = [i for i, v in enumerate(verdicts) if v is not None]
        skipped = len(rows) - len(scored)
        ref_rate = sum(verdicts[i] for i in scored) / max(len(scored), 1)
        print(
            f"  {ref}: {len(scored)} scored, {skipped} skipped (gold parses to nothing); {100 * ref_rate:.1f}% correct"
        )
        summary[f"{ref}_skipped"] = skipped
        if not scored:
            print("    nothing to compare: the reference skips every gold")
            continue
        for setting, verdicts_d in distill.items():
            agree = sum(verdicts_d[i].correct == verdicts[i] for i in scored)
            rate = agree / len(scored)
            d_rate = sum(verdicts_d[i].correct for i in scored) / len(scored)
            print(
                f"    distill {setting:6s} (require_boxed={SETTINGS[setting]!s:5s}) vs {ref}: "
                f"{agree}/{len(scored)} agree ({100 * rate:.1f}%); distill {100 * d_rate:.1f}% correct"
            )
            summary[f"{setting}_vs_{ref}"] = round(rate, 4)
            groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for i in scored:
                if verdicts_d[i].correct != verdicts[i]:
                    why, detail = cause(rows[i], verdicts_d[i], verdicts[i])
                    groups[why].append((i, detail))
            for why, idx in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                kinds = Counter(rows[i]["kind"] for i, _ in idx).most_common(4)
                print(f"      {len(idx):4d} x {why}")
                print("             kinds: " + ", ".join(f"{k} {c}" for k, c in kinds))
                for i, detail in idx[:show]:
                    tail = rows[i]["completion"][-70:].replace("\n", "\\n")
                    print(f"             gold={rows[i]['gold'][:40]!r} answer=...{tail!r}")
                    if detail:
                        print(f"               {detail}")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="", help="traces.jsonl or a `distill generate` folder (optional)")
    ap.add_argument("--problems", type=int, default=30, help="built-in problems for the synthetic traces")
    ap.add_argument("--show", type=int, default=1, help="examples shown per group of disagreements")
    ap.add_argument("--workers", type=int, default=2, help="distill's verification worker processes")
    ap.add_argument("--early", action="store_true", help="also score with open-r1's early-2025 form (answer first)")
    ap.add_argument("--no-trl", action="store_true", help="do not use TRL's accuracy_reward as a second reference")
    args = ap.parse_args()

    # per-sample warnings from the references (math-verify's timeouts; "equations=True ... deprecated": the
    # recipe still passes it, latex2sympy2_extended 1.11 ignores it)
    for name in ("math_verify.parser", "math_verify.grader", "latex2sympy2_extended.math_normalization"):
        logging.getLogger(name).setLevel(logging.ERROR)
    refs: dict[str, Callable] = {"open-r1": open_r1}
    if args.early:
        refs["open-r1-early"] = open_r1_early
    trl = None if args.no_trl else trl_reference()
    if trl is not None:
        refs["trl"] = trl
    else:
        print("TRL's accuracy_reward not available (or --no-trl): open-r1 recipe only")

    t0 = time.perf_counter()
    inputs = [
        ("math-verify cases", math_verify_cases()),
        ("synthetic R1-style traces", synthetic_traces(args.problems)),
    ]
    if args.input:
        inputs.append((args.input, input_traces(args.input)))
    summaries = [score(name, rows, refs, args.show, args.workers) for name, rows in inputs]
    print("\n" + json.dumps(summaries))
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
