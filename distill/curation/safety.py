"""Safety screen for distilled traces: a keyword screen, then an LLM risk review of the flagged rows.

`screen` finds whole-word, case-insensitive hits of the phrases in data/safety_keywords.txt. A hit only
flags a row: `review_many` asks a model on an OpenAI-compatible server to read the prompt and the response
and answer `RISK: SAFE` or `RISK: UNSAFE: <category>`. The filter rejects a flagged row with reason
"safety: <category>" unless its review is SAFE; an undecidable review or a failed request leaves it
rejected (fail closed).

The boundary rule (`_keyword_pattern`): no word character (what `re` calls one: a Unicode letter or
digit, or _) may touch either end of a hit, so "kill" is no hit in "skill" or "killer" but is one in
"(kill)" or "kill-switch". A space in a keyword matches any run of whitespace; a hyphen matches a hyphen,
one whitespace character or nothing; a trailing * matches the rest of the word. Case is compared as
Python's re.IGNORECASE does (so "ſarin", with a long s, is "sarin"). Within a category hits do not overlap
("master race war" is one hit, "master race"), and where two keywords match at one place the earlier in the
file wins.

Speed: R1-length traces (~20 KB) made one regex alternation of every keyword, with look-arounds, cost ~40 ms
a row (~9 CPU-hours for 800k rows; 81% of `distill filter`). An Aho-Corasick automaton (pyahocorasick, a C
extension with wheels) now scans the lower-cased text once for where a keyword can start, its first word
and the character after (~0.2 ms a row); only those few places are checked against the keyword's own
pattern, so the hits are exactly the regex's. The automaton is built per keyword set on the first call in
each process (~70 ms, cached), so worker processes need only the plain keyword dict.
"""

from __future__ import annotations

import array
import asyncio
import re
import sys
from functools import lru_cache
from pathlib import Path

import ahocorasick

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
    """The boundary rule, as a regex: whole words, so no word character (`\\w`: a Unicode letter, digit or
    underscore) may touch either end. Spaces match any whitespace, a hyphen matches a hyphen, one whitespace
    character or nothing ("self-harm", "self harm", "selfharm"); a trailing * matches the rest of the word.
    `screen` checks every candidate that the automaton finds against this pattern, at the candidate's start."""
    prefix = keyword.endswith("*")
    words = keyword.rstrip("*").split()
    body = r"\s+".join(re.escape(w).replace(r"\-", r"[-\s]?") for w in words) + (r"\w*" if prefix else "")
    return rf"(?<!\w)({body})(?!\w)"


def _every_character() -> str:
    """All 0x110000 code points (lone surrogates too) in one string, to ask `re` which of them match."""
    codes = array.array("I", range(0x110000))
    return codes.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be", "surrogatepass")


@lru_cache(maxsize=1)
def _whitespace() -> tuple[str, ...]:
    """Every character `\\s` matches (what a space or a hyphen of a keyword may stand for)."""
    return tuple(re.findall(r"\s", _every_character()))


@lru_cache(maxsize=32)
def _case_table(chars: frozenset[str]) -> dict[int, str]:
    """code point -> one representative, for every character that `re.IGNORECASE` matches to one of `chars`.

    Asked of `re` itself rather than written down: besides upper and lower case it matches e.g. "ſ" (long s)
    to s, the Kelvin sign to k, and both "ı" and "İ" to i. Characters that match each other share one
    representative: the lower-case ASCII letter where there is one."""
    if not chars:
        return {}
    matching = set(re.findall("[" + "".join(re.escape(c) for c in chars) + "]", _every_character(), re.IGNORECASE))
    patterns = [re.compile(re.escape(c), re.IGNORECASE) for c in sorted(chars)]
    groups: list[set[str]] = []
    for p in patterns:
        group = {t for t in matching if p.fullmatch(t)}
        for other in [g for g in groups if g & group]:  # join overlapping groups
            groups.remove(other)
            group |= other
        groups.append(group)
    table: dict[int, str] = {}
    for group in groups:
        ascii_ = sorted(t.lower() for t in group if t.isascii())
        rep = ascii_[0] if ascii_ else min(group)
        table.update((ord(t), rep) for t in group)
    return table


class _Matcher:
    """`screen` for one keyword set: an Aho-Corasick automaton over the lower-cased text finds where a keyword
    may start; the keyword's own `_keyword_pattern` decides at each such place (the boundary rule, spaces,
    hyphens and word endings), and the category's matches are walked the way `re.finditer` walks an alternation
    of the category's patterns (leftmost first; at one place the earlier keyword; no overlaps)."""

    def __init__(self, frozen: tuple[tuple[str, tuple[str, ...]], ...]):
        self.categories = [c for c, _ in frozen]
        self.words: list[str] = []  # by keyword id; ids run in category order, then keyword order
        self.category: list[int] = []
        self.patterns: list[re.Pattern[str]] = []
        self.scanned: list[tuple[int, re.Pattern[str]]] = []  # keywords with a leading hyphen: found by `re`
        heads: list[tuple[int, list[str]]] = []  # keyword id, its first word split at hyphens
        for i, (_, words) in enumerate(frozen):
            for word in words:
                parts = word.rstrip("*").split()
                if len(parts) < 2 and not "".join(parts).strip("-"):
                    raise DistillError(f"safety keyword {word!r} would match empty text: it needs a letter or digit")
                kid = len(self.words)
                self.words.append(word)
                self.category.append(i)
                self.patterns.append(re.compile(_keyword_pattern(word), re.IGNORECASE))
                if parts[0].startswith("-"):  # no fixed first letters: a look-ahead regex finds its starts
                    self.scanned.append((kid, re.compile(f"(?={_keyword_pattern(word)})", re.IGNORECASE)))
                else:
                    heads.append((kid, parts[0].split("-")))
        literal = {c for _, parts in heads for part in parts for c in part}
        self.table = _case_table(frozenset(literal))
        exotic = sorted(chr(o) for o in self.table if o > 127)
        self.exotic = re.compile("[" + "".join(re.escape(c) for c in exotic) + "]") if exotic else None
        anchors: dict[str, list[int]] = {}
        for kid, parts in heads:
            for anchor in self._anchors(parts, len(self.words[kid].rstrip("*").split()) > 1):
                anchors.setdefault(anchor, []).append(kid)
        self.automaton = ahocorasick.Automaton()
        for anchor, kids in anchors.items():
            self.automaton.add_word(anchor, (len(anchor), tuple(kids)))
        self.automaton.make_automaton()

    def _anchors(self, parts: list[str], more_words: bool) -> list[str]:
        """What the lower-cased text holds where the keyword starts: its first word up to the first hyphen,
        and the character after that when it is known to be one of a few (a hyphen, a whitespace character
        or the next letter; whitespace between words)."""
        head = parts[0].translate(self.table)
        if len(parts) == 1:
            return [head + w for w in _whitespace()] if more_words else [head]
        if parts[1]:  # "self-harm": "self-", "self h" (any whitespace), "selfh"
            return [head + "-", head + parts[1][0].translate(self.table)] + [head + w for w in _whitespace()]
        return [head]  # "a--b": a second hyphen may follow

    def lower(self, text: str) -> str:
        """The text with each character replaced by its representative (same length, same positions): the
        C-speed str.lower() where that is the same (ASCII text, or no exotic case and no character whose lower
        case is two), else a translation."""
        if text.isascii():
            return text.lower()
        if self.exotic is None or not self.exotic.search(text):
            low = text.lower()
            if len(low) == len(text):
                return low
        return text.translate(self.table)

    def screen(self, text: str) -> list[tuple[str, str]]:
        found: list[tuple[int, int, int, int]] = []  # category, start, keyword id, end
        if self.automaton.kind == ahocorasick.AHOCORASICK:
            for last, (n, kids) in self.automaton.iter(self.lower(text)):
                start = last - n + 1
                for kid in kids:
                    m = self.patterns[kid].match(text, start)
                    if m:
                        found.append((self.category[kid], start, kid, m.end()))
        for kid, scan in self.scanned:
            for start in scan.finditer(text):
                m = self.patterns[kid].match(text, start.start())
                if m:  # always: the same pattern
                    found.append((self.category[kid], m.start(), kid, m.end()))
        hits: list[tuple[str, str]] = []
        category, pos, seen = -1, 0, set()
        for i, start, kid, end in sorted(found):
            if i != category:
                category, pos, seen = i, 0, set()
            if start < pos:  # inside the category's previous match
                continue
            pos = end
            if self.words[kid] not in seen:
                seen.add(self.words[kid])
                hits.append((self.categories[i], self.words[kid]))
        return hits


@lru_cache(maxsize=32)
def _matcher(frozen: tuple[tuple[str, tuple[str, ...]], ...]) -> _Matcher:
    return _Matcher(frozen)


def screen(text: str, keywords: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(category, keyword) for each keyword found in `text`, once each, in file order of categories and
    first occurrence within a category. Case-insensitive, whole words only ("skill" is no hit for "kill").

    Matches within a category do not overlap: "master race war" is one hit ("master race"), as with a
    regex alternation of the category's keywords. The automaton is built on the first call with a keyword
    set and kept (per process) for the next calls."""
    matcher = _matcher(tuple((c, tuple(ws)) for c, ws in keywords.items()))
    return matcher.screen(text) if text else []


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
