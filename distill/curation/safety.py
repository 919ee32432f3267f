"""Safety screen for distilled traces: a keyword screen, then an LLM risk review of the flagged rows.

`screen` finds whole-word, case-insensitive hits of the phrases in data/safety_keywords.txt (one
precompiled regex per category). A hit only flags a row: `review_many` asks a model on an
OpenAI-compatible server to read the prompt and the response and answer `RISK: SAFE` or
`RISK: UNSAFE: <category>`. The filter rejects a flagged row with reason "safety: <category>" unless its
review is SAFE; an undecidable review or a failed request leaves it rejected (fail closed).
"""

from __future__ import annotations

import asyncio
import re
from functools import lru_cache
from pathlib import Path

from distill.common.client import Job, Result, run_jobs
from distill.common.errors import DistillError
from distill.common.resources import DATA_DIR
from distill.common.server import connect_all
from distill.verification.answers import final_part

KEYWORDS_FILE = DATA_DIR / "safety_keywords.txt"
CATEGORIES = ("weapons", "explosives", "bio_chem_agents", "self_harm", "malware", "csam", "hate", "other")


def load_keywords(path: str | Path | None = None) -> dict[str, list[str]]:
    """Category -> keywords from a keyword file (data/safety_keywords.txt by default).

    `[category]` starts a section; each other non-empty line is a keyword or phrase; `#` starts a comment
    (a whole line, or after whitespace at the end of a line). Keywords are lowercased and deduplicated."""
    p = Path(path) if path is not None else KEYWORDS_FILE
    if not p.is_file():
        raise DistillError(f"safety keyword file {p} does not exist")
    out: dict[str, list[str]] = {}
    category = ""
    for n, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        header = re.fullmatch(r"\[\s*([\w-]+)\s*\]", line)
        if header:
            category = header.group(1).lower()
            out.setdefault(category, [])
            continue
        if line.startswith("["):
            raise DistillError(f"{p}, line {n}: a category header is [name] with letters, digits, _ or -")
        if not category:
            raise DistillError(f"{p}, line {n}: keyword {line!r} comes before any [category] header")
        if not re.search(r"\w", line):
            raise DistillError(f"{p}, line {n}: keyword {line!r} has no letters or digits")
        keyword = " ".join(line.lower().split())
        if keyword not in out[category]:
            out[category].append(keyword)
    if not any(out.values()):
        raise DistillError(f"{p}: no keywords")
    return out


def _keyword_pattern(keyword: str) -> str:
    """Whole words: no word character may touch either end. Spaces match any whitespace, a hyphen matches
    a hyphen, a space or nothing ("self-harm", "self harm", "selfharm"); a trailing * matches the rest of
    the word."""
    prefix = keyword.endswith("*")
    words = keyword.rstrip("*").split()
    body = r"\s+".join(re.escape(w).replace(r"\-", r"[-\s]?") for w in words) + (r"\w*" if prefix else "")
    return rf"(?<!\w)({body})(?!\w)"


@lru_cache(maxsize=32)
def _compiled(frozen: tuple[tuple[str, tuple[str, ...]], ...]) -> list[tuple[str, re.Pattern[str], tuple[str, ...]]]:
    out = []
    for category, words in frozen:
        if words:
            out.append((category, re.compile("|".join(_keyword_pattern(w) for w in words), re.IGNORECASE), words))
    return out


@lru_cache(maxsize=32)
def _any_keyword(frozen: tuple[tuple[str, tuple[str, ...]], ...]) -> re.Pattern[str]:
    words = [w for _, ws in frozen for w in ws]
    return re.compile("|".join(f"(?:{_keyword_pattern(w)})" for w in words) or r"(?!)", re.IGNORECASE)


def screen(text: str, keywords: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(category, keyword) for each keyword found in `text`, once each, in file order of categories and
    first occurrence within a category. Case-insensitive, whole words only ("skill" is no hit for "kill")."""
    frozen = tuple((c, tuple(ws)) for c, ws in keywords.items())
    if not _any_keyword(frozen).search(text or ""):  # one pass over the text: most rows have no hit at all
        return []
    hits: list[tuple[str, str]] = []
    for category, pattern, words in _compiled(frozen):
        seen: set[str] = set()
        for m in pattern.finditer(text or ""):
            word = words[(m.lastindex or 1) - 1]  # one group per keyword, in order
            if word not in seen:
                seen.add(word)
                hits.append((category, word))
    return hits


RISK_PROMPT = """You are a safety reviewer for a dataset of model responses that will be used to train other
models. Read the prompt and the response below and decide whether the response gives meaningful help
toward serious harm.

UNSAFE means the response provides actionable help for: weapons (building, converting or untraceable
firearms), explosives, biological or chemical agents capable of mass harm, self-harm or suicide,
malware or intrusion into systems, sexual content involving minors, or hatred or violence against
people for who they are. Mentioning such a topic in an educational, historical, fictional, medical or
safety-oriented way without actionable instructions is SAFE, and so is an ordinary math, science or
coding answer that happens to use one of these words.

<prompt>
{prompt}
</prompt>

<response>
{response}
</response>

Reply with exactly one line and nothing else: either
RISK: SAFE
or
RISK: UNSAFE: <category>
where <category> is one of: weapons, explosives, bio_chem_agents, self_harm, malware, csam, hate, other."""

# "RISK: UNSAFE: weapons", "RISK: UNSAFE (weapons)", "RISK: UNSAFE - weapons", "RISK: UNSAFE weapons"
_RISK_LINE = re.compile(r"risk\s*:\s*(safe|unsafe)(?:(?:\s*[:(\-]\s*|\s+)([\w-]+)\s*\)?)?\s*\.?", re.IGNORECASE)


def _parse(text: str) -> tuple[bool | None, str]:
    """(safe, category): (True, "") for SAFE, (False, category) for UNSAFE, (None, "undecidable")."""
    rest = final_part(text or "")
    lines = [line.strip() for line in (rest or "").strip().splitlines() if line.strip()]
    m = _RISK_LINE.fullmatch(lines[0]) if rest is not None and len(lines) == 1 else None
    if m is None:
        return None, "undecidable"
    if m.group(1).lower() == "safe":
        return (True, "") if m.group(2) is None else (None, "undecidable")  # "SAFE: weapons" is not a verdict
    category = (m.group(2) or "other").lower()
    return False, category if category in CATEGORIES else "other"


def parse_risk(text: str) -> bool | None:
    """True when the review says SAFE, False when UNSAFE, None when undecidable.

    Strict like distill.verification.judge.parse_verdict: after a closed <think> block, exactly one non-empty line,
    `RISK: SAFE` or `RISK: UNSAFE` optionally followed by `: <category>` (case-insensitive); anything else
    (more lines, both words, no verdict) is undecidable."""
    return _parse(text)[0]


def risk_prompt(prompt: str, response: str, max_chars: int = 0) -> str:
    """The review message for one row; with max_chars > 0 a longer response keeps its head and tail."""
    if max_chars > 0 and len(response) > max_chars:
        half = max_chars // 2
        omitted = len(response) - 2 * half
        response = f"{response[:half]}\n[... {omitted} characters omitted ...]\n{response[-half:]}"
    return RISK_PROMPT.format(prompt=prompt.strip(), response=response.strip())


def review_many(
    items: list[tuple[str, str]],
    urls: list[str],
    model: str = "",
    concurrency: int = 16,
    max_tokens: int = 256,
    timeout: float = 120,
    retries: int = 4,
    max_chars: int = 0,
) -> list[tuple[bool | None, str]]:
    """Review (prompt, response) items on the servers at `urls`; one (safe, detail) per item, in order.

    (True, "") SAFE; (False, category) UNSAFE; (None, "undecidable") for a reply that is not exactly one
    risk line; (None, "error: <message>") for a request that failed after its retries (e.g. a response
    longer than the reviewer's context: set max_chars to send its head and tail). Temperature 0."""
    out: list[tuple[bool | None, str]] = [(None, "error: no result")] * len(items)
    if not items:
        return out
    if not urls:
        raise DistillError("the safety review needs the URL of an OpenAI-compatible server (e.g. from `distill serve`)")
    servers = connect_all(urls, model)
    jobs = [
        Job(id=str(i), sample=0, messages=[{"role": "user", "content": risk_prompt(p, r, max_chars)}], seed=None)
        for i, (p, r) in enumerate(items)
    ]

    def done(res: Result) -> None:
        i = int(res.job.id)
        out[i] = (None, f"error: {res.error}") if res.error else _parse(res.completion)

    params = {"temperature": 0.0, "max_tokens": max_tokens}
    asyncio.run(run_jobs(servers, jobs, params, done, concurrency, timeout, desc="safety review", retries=retries))
    return out
