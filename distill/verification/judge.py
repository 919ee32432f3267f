"""An LLM judge for answers that rules cannot check (free-form STEM, general questions).

A model on an OpenAI-compatible server (vLLM, `distill serve`, any API) compares a candidate's FINAL
answer with the reference answer and replies with one line, `VERDICT: CORRECT` or `VERDICT: INCORRECT`.
The parser is strict: any other reply is undecidable, and the row is not counted as correct. A judge is
slower and less reliable than math-verify, so it is meant only for rows the rule-based verifiers cannot
decide. Requests go through distill.generation.generate's client (retries, several servers), at temperature 0.

Verdict reasons: "correct", "judge: incorrect", "judge: undecidable" (the reply was not exactly one
verdict line), "judge: error: <message>" (the request failed after its retries), and, without a request,
"truncated" (a <think> never closed: there is no final answer) and "no_answer" (the final part is empty).
"""

from __future__ import annotations

import asyncio
import re

from distill.common.client import Job, Result, run_jobs
from distill.common.errors import DistillError
from distill.common.server import connect_all
from distill.verification.answers import Verdict, final_part

JUDGE_PROMPT = """You are grading the final answer of a solution against a reference answer.

Problem:
{problem}

Reference answer:
{reference}

Candidate's final answer:
{answer}

Decide whether the candidate's final answer means the same as the reference answer. Judge only the final
answer, not the reasoning or the wording. Answers that are equivalent (the same number, expression, set,
choice or statement written differently, with equivalent units, or rounded sensibly when the reference is
approximate) are correct. An answer that is missing, incomplete, hedged between options, or that states a
different result is incorrect.

Reply with exactly one line and nothing else, either
VERDICT: CORRECT
or
VERDICT: INCORRECT"""

_VERDICT_LINE = re.compile(r"verdict\s*:\s*(correct|incorrect)\s*\.?", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """True for CORRECT, False for INCORRECT, None when undecidable.

    Strict: after dropping a closed <think>...</think> block, the reply must be exactly one non-empty line,
    `VERDICT: CORRECT` or `VERDICT: INCORRECT` (case and spacing around the colon do not matter, a final
    period is allowed). Anything else is undecidable: extra lines (text after a verdict is where models
    retract it), both verdicts, no verdict, a verdict inside a sentence, an unclosed <think>."""
    rest = final_part(text or "")
    if rest is None:
        return None
    lines = [line.strip() for line in rest.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        return None
    m = _VERDICT_LINE.fullmatch(lines[0])
    return None if m is None else m.group(1).lower() == "correct"


def judge_prompt(problem: str, reference: str, answer: str) -> str:
    """The user message for one item (the values are inserted as they are; braces in them are safe)."""
    return JUDGE_PROMPT.format(problem=problem.strip(), reference=reference.strip(), answer=answer.strip())


def judge_many(
    items: list[tuple[str, str, str]],
    urls: list[str],
    model: str = "",
    concurrency: int = 16,
    max_tokens: int = 256,
    timeout: float = 120,
    retries: int = 4,
    max_answer_chars: int = 4000,
) -> list[Verdict]:
    """Judge (problem, reference, candidate) items on the servers at `urls`; one Verdict per item, in order.

    The candidate is reduced to its final part (distill.verification.answers.final_part: the text after the last
    </think>), and to its last `max_answer_chars` characters, where a final answer is. Servers are checked
    first (a dead URL raises a DistillError within seconds); a request that still fails after `retries`
    gives "judge: error: ...". `extracted` is the final answer shown to the judge; `seconds` is 0 (requests
    overlap, so there is no per-item time)."""
    verdicts: list[Verdict | None] = [None] * len(items)
    jobs: list[Job] = []
    for i, (problem, reference, completion) in enumerate(items):
        answer = final_part(completion or "")
        if answer is None:
            verdicts[i] = Verdict(False, "truncated", "", 0.0)
            continue
        answer = answer.strip()[-max_answer_chars:] if max_answer_chars > 0 else answer.strip()
        if not answer:
            verdicts[i] = Verdict(False, "no_answer", "", 0.0)
            continue
        messages = [{"role": "user", "content": judge_prompt(problem, reference, answer)}]
        jobs.append(Job(id=str(i), sample=0, messages=messages, seed=None, meta={"i": i, "answer": answer}))
    if jobs:
        if not urls:
            raise DistillError("the LLM judge needs the URL of an OpenAI-compatible server (e.g. from `distill serve`)")
        servers = connect_all(urls, model)
        params = {"temperature": 0.0, "max_tokens": max_tokens}

        def done(res: Result) -> None:
            i, answer = res.job.meta["i"], res.job.meta["answer"]
            if res.error:
                verdicts[i] = Verdict(False, f"judge: error: {res.error}", answer, 0.0)
                return
            decision = parse_verdict(res.completion)
            reason = {True: "correct", False: "judge: incorrect", None: "judge: undecidable"}[decision]
            verdicts[i] = Verdict(decision is True, reason, answer, 0.0)

        asyncio.run(run_jobs(servers, jobs, params, done, concurrency, timeout, desc="judge", retries=retries))
    return [v if v is not None else Verdict(False, "judge: error: no result", "", 0.0) for v in verdicts]
