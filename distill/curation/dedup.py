"""Duplicate prompts and benchmark contamination in trace rows, for `distill filter`.

Dedup works on DISTINCT prompts: the n samples of one prompt share an id and are never duplicates of
each other. Rows are grouped by id (the row index when a row has none); the first row of each id stands
for the prompt. When a prompt's text matches an earlier prompt with another id, every row of the later
prompt is reported, mapped to the first row of the earlier prompt.

* `exact_duplicates`: equal after `normalize` (case, spacing, punctuation, thousands separators).
* `near_duplicates`: MinHash over character 5-gram shingles with LSH banding finds candidates; each
  candidate is confirmed by the exact Jaccard similarity of the two shingle sets. Greedy in row order: a
  prompt is a duplicate of the earliest earlier KEPT prompt it matches, so kept prompts never match each
  other and every dropped one matches a kept one. By default both problems must also hold the same
  numbers in the same order: templated problems (the builtin tasks, GSM8K-style variants) differ only in
  their numbers and have different answers, so they are different problems.
* `Contamination`: word 8-gram overlap with benchmark problems (the usual decontamination test), plus
  exact normalized equality, which also catches problems shorter than 8 words.

Every hash is a stable function of the text (splitmix64 over code points, blake2b for seeds), never
Python's per-process salted hash(), so results are identical across runs, processes and machines.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from distill.common.errors import DistillError
from distill.problems.benchmarks import load_benchmark, load_benchmark_prompts

# --------------------------------------------------------------------------------------------------
# Normalization

# Operators kept as tokens of their own: they carry a math problem's meaning ("x+1" vs "x-1").
_OPERATORS = "+\\-*/=<>^%!\u00b1\u00d7\u00f7\u2200-\u22ff"
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")  # "two-digit" -> "two digit"; "-3", "x-1" stay
_DASHES = re.compile(r"-{2,}")  # "--" is a dash in prose, not two minus signs
_APOSTROPHE = re.compile(r"['\u2019`]")
_NON_DECIMAL_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # keep "3.5", drop sentence and abbreviation dots
_OPERATOR = re.compile(f"([{_OPERATORS}])")
_OTHER = re.compile(f"[^\\w\\s.{_OPERATORS}]|_")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def normalize(text: str) -> str:
    """Lowercase words, digits and math operators separated by single spaces.

    NFKC folds look-alike characters ("²" -> "2", full-width digits); thousands separators go ("1,000",
    "1{,}000" -> "1000"); "--" is a dash; decimal points stay; operators (+ - * / = < > ^ % ! and the
    Unicode math operators) become separate tokens so "x+1=2" and "x + 1 = 2" agree; other punctuation,
    brackets, "$" and the backslash of LaTeX commands become spaces ("\\frac{1}{2}" -> "frac 1 2");
    apostrophes join ("what's" -> "whats").
    """
    t = unicodedata.normalize("NFKC", text).casefold().replace("\u2212", "-").replace("{,}", ",")
    t = _THOUSANDS.sub("", t)
    t = _DASHES.sub(" ", t)
    t = _WORD_HYPHEN.sub(" ", t)
    t = _APOSTROPHE.sub("", t)
    t = _NON_DECIMAL_DOT.sub(" ", t)
    t = _OTHER.sub(" ", t)
    t = _OPERATOR.sub(r" \1 ", t)
    return " ".join(t.split())


def _numbers(normalized: str) -> tuple[str, ...]:
    """The numbers of a text in order: "3 adult and 2 child tickets" differs from "2 adult and 3 child"."""
    return tuple(_NUMBER.findall(normalized))


# --------------------------------------------------------------------------------------------------
# Distinct prompts


def _prompts(rows: Sequence[dict], id_key: str) -> tuple[list[int], dict[int, list[int]]]:
    """The first row index of each distinct prompt (in order) and the rows of each prompt."""
    first_of: dict[str, int] = {}
    members: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        pid = row.get(id_key)
        ident = f"id:{pid}" if pid is not None else f"row:{i}"
        if ident not in first_of:
            first_of[ident] = i
            members[i] = []
        members[first_of[ident]].append(i)
    return list(members), members


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else ""


def exact_duplicates(rows: Sequence[dict], key: str = "problem", id_key: str = "id") -> dict[int, int]:
    """Row index -> index of the first row of the earlier prompt whose normalized `key` text is equal.

    Compares distinct prompts (rows grouped by `id_key`; samples of one prompt are never duplicates of
    each other) and reports every row of each later prompt. Empty texts are never duplicates."""
    firsts, members = _prompts(rows, id_key)
    seen: dict[str, int] = {}
    dups: dict[int, int] = {}
    for first in firsts:
        norm = normalize(_text(rows[first], key))
        if not norm:
            continue
        if norm in seen:
            for i in members[first]:
                dups[i] = seen[norm]
        else:
            seen[norm] = first
    return dups


# --------------------------------------------------------------------------------------------------
# MinHash + LSH

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_POLY = np.uint64(0x100000001B3)  # odd multiplier of the polynomial hash over code points


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a stable bijection of uint64 with good avalanche (wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def shingles(normalized: str, n: int = 5) -> np.ndarray:
    """Sorted unique 64-bit hashes of the character n-grams of a normalized text (the whole text when
    it is shorter than n). Vectorized: a polynomial hash of the code points of each window, then mixed."""
    if not normalized:
        return np.zeros(0, dtype=np.uint64)
    cps = np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = max(1, min(n, len(cps)))
    with np.errstate(over="ignore"):
        h = np.zeros(len(cps) - n + 1, dtype=np.uint64)
        for k in range(n):
            h = h * _POLY + cps[k : len(cps) - n + 1 + k]
        return np.unique(_mix(h + np.uint64(n)))


def _seeds(num_perm: int, seed: int) -> np.ndarray:
    """num_perm 64-bit seeds derived from `seed` with blake2b (stable everywhere)."""
    digests = b"".join(
        hashlib.blake2b(f"distill-minhash:{seed}:{i}".encode(), digest_size=8).digest() for i in range(num_perm)
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def minhash(shingle_hashes: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The MinHash signature: for each seed, the minimum over shingles of mix(shingle ^ seed)."""
    if shingle_hashes.size == 0:
        return np.full(seeds.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(shingle_hashes[None, :] ^ seeds[:, None]).min(axis=1)


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band) minimizing weighted false-positive/false-negative areas of the LSH
    S-curve 1 - (1 - s**r)**b around `threshold`. Misses weigh more: candidates are checked exactly."""
    s = np.linspace(0.0, 1.0, 2001)
    best, best_cost = (1, num_perm), float("inf")
    for r in range(1, num_perm + 1):
        b = num_perm // r
        p = 1.0 - (1.0 - s**r) ** b
        fp = np.where(s < threshold, p, 0.0).mean()  # areas over [0, 1] on a uniform grid
        fn = np.where(s >= threshold, 1.0 - p, 0.0).mean()
        cost = (1 - fn_weight) * fp + fn_weight * fn
        if cost < best_cost:
            best, best_cost = (b, r), cost
    return best


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def near_duplicates(
    rows: Sequence[dict],
    key: str = "problem",
    threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 0,
    id_key: str = "id",
    same_numbers: bool = True,
) -> dict[int, tuple[int, float]]:
    """Row index -> (first row of the earlier kept prompt, Jaccard similarity) for near-duplicate prompts.

    Shingles are character `ngram`-grams of the normalized text: math problems are short (30-100 words),
    and a one-word rewording changes up to 5 of ~40 word 5-grams (Jaccard ~0.75, missed at 0.8) but only
    ~10 of ~250 character 5-grams (~0.92). Candidates come from LSH bands over `num_perm` MinHash values
    and are kept only when the exact Jaccard of the shingle sets is >= `threshold` (no false positives
    from the sketch). With `same_numbers`, the two problems must also hold the same numbers in the same order.
    Includes exact duplicates (similarity 1.0). Deterministic: stable hashes and row order only."""
    if not 0.0 < threshold <= 1.0:
        raise DistillError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    if ngram < 1 or num_perm < 1:
        raise DistillError("near-duplicate ngram and num_perm must be at least 1")
    firsts, members = _prompts(rows, id_key)
    seeds = _seeds(num_perm, seed)
    bands, r = lsh_params(threshold, num_perm)
    tables: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(bands)]
    kept: dict[int, np.ndarray] = {}
    dups: dict[int, tuple[int, float]] = {}
    for first in firsts:
        norm = normalize(_text(rows[first], key))
        if not norm:
            continue
        sh = shingles(norm, ngram)
        nums = _numbers(norm) if same_numbers else ()
        sig = minhash(sh, seeds)
        # With same_numbers, the numbers join each bucket key: templated prompts ("A train travels 60 km ...")
        # that differ only in their numbers never share a bucket, so their candidate lists stay short and
        # a million of them costs linear time instead of a scan over every earlier variant.
        suffix = repr(nums).encode() if same_numbers else b""
        keys = [sig[b * r : (b + 1) * r].tobytes() + suffix for b in range(bands)]
        candidates = sorted({c for b, k in enumerate(keys) for c in tables[b].get(k, ())})
        match = None
        for c in candidates:  # earliest kept prompt that really is similar
            sim = jaccard(sh, kept[c])  # same numbers already: they are part of every bucket key
            if sim >= threshold:
                match = (c, round(sim, 4))
                break
        if match is not None:
            for i in members[first]:
                dups[i] = match
            continue
        kept[first] = sh
        for b, k in enumerate(keys):
            tables[b][k].append(first)
    return dups


# --------------------------------------------------------------------------------------------------
# Decontamination


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """The word n-grams of the normalized text (empty when it has fewer than n words)."""
    words = normalize(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Match:
    """A benchmark problem that a text overlaps."""

    benchmark: str
    index: int  # position of the problem in the list given to build_index (the benchmark's order)
    count: int  # distinct shared n-grams
    example: str  # one shared n-gram, or the normalized text for an exact match
    exact: bool  # the normalized texts are equal


class Contamination:
    """An index of benchmark problems: which of them a training problem overlaps.

    A text matches a problem when it shares at least `min_matches` distinct word n-grams with it, or when
    the two are equal after normalization (this covers problems shorter than n words, which have no
    n-grams). N-grams found in more than `boilerplate` problems of one benchmark are ignored: they are
    statement templates ("the input is given from standard input in the following format"), not content.
    """

    def __init__(self, n: int = 8, min_matches: int = 1, boilerplate: int = 10) -> None:
        if n < 1 or min_matches < 1:
            raise DistillError("decontamination n and min_matches must be at least 1")
        self.n = n
        self.min_matches = min_matches
        self.boilerplate = boilerplate
        self.index: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        self.exact: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self.sizes: dict[str, int] = {}

    @classmethod
    def build_index(
        cls, benchmarks: list[tuple[str, list[str]]], n: int = 8, min_matches: int = 1, boilerplate: int = 10
    ) -> Contamination:
        """Index (benchmark name, problems) pairs: n-gram -> [(benchmark, problem index)]."""
        self = cls(n, min_matches, boilerplate)
        for name, problems in benchmarks:
            self.add(name, problems)
        return self

    def add(self, name: str, problems: list[str]) -> None:
        per_benchmark: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
        for idx, problem in enumerate(problems):
            norm = normalize(problem)
            if norm:
                self.exact[norm].append((name, idx))
            for g in ngrams(problem, self.n):
                per_benchmark[g].append((name, idx))
        for g, where in per_benchmark.items():
            if self.boilerplate and len(where) > self.boilerplate:
                continue
            self.index.setdefault(g, []).extend(where)
        self.sizes[name] = self.sizes.get(name, 0) + len(problems)

    def check(self, text: str) -> list[Match]:
        """The benchmark problems this text overlaps, most shared n-grams first ([] when clean)."""
        counts: Counter[tuple[str, int]] = Counter()
        example: dict[tuple[str, int], tuple[str, ...]] = {}
        for g in ngrams(text, self.n):
            for where in self.index.get(g, ()):
                counts[where] += 1
                example.setdefault(where, g)
        exact = set(self.exact.get(normalize(text), ()))
        hits = {w for w, c in counts.items() if c >= self.min_matches} | exact
        matches = [
            Match(
                benchmark=w[0],
                index=w[1],
                count=counts.get(w, 0),
                example=" ".join(example[w]) if w in example else normalize(text)[:200],
                exact=w in exact,
            )
            for w in hits
        ]
        return sorted(matches, key=lambda m: (not m.exact, -m.count, m.benchmark, m.index))


def load_benchmark_problems(names: list[str], num: int = 0) -> list[tuple[str, list[str]]]:
    """(benchmark name, problem texts) for each benchmark name or definition path, for build_index.

    Uses the definitions under eval/ (distill.problems.benchmarks); a Hub benchmark that cannot be loaded falls back
    to its `local` copy, else raises a DistillError naming it and saying how to give a local copy.
    `num` > 0 keeps the first `num` problems (builtin problems are generated and need num > 0)."""

    out = []
    for name in names:
        bench = load_benchmark(name)
        if bench.dataset == "builtin" and num <= 0:
            raise DistillError(
                f"decontamination against {bench.name!r} needs a number of problems (> 0): they are generated"
            )
        prompts = load_benchmark_prompts(bench, num_prompts=num)
        out.append((bench.name, [p["problem"] for p in prompts]))
    return out
