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
import sqlite3
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    """The first row index of each distinct prompt (in order), and the other rows of each prompt that has
    several (a prompt absent from the second map has one row). Compact: one dict entry per prompt keyed by
    the row's own id object, since dedup runs over every prompt of a run."""
    first_of: dict[object, int] = {}
    firsts: list[int] = []
    more: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        pid = row.get(id_key)
        ident = ("row", i) if pid is None else str(pid)  # a missing id: a prompt of its own
        first = first_of.setdefault(ident, i)
        if first == i:
            firsts.append(i)
        else:
            more.setdefault(first, []).append(i)
    return firsts, more


def _members(first: int, more: dict[int, list[int]]) -> list[int]:
    return [first, *more.get(first, ())]


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else ""


def exact_duplicates(rows: Sequence[dict], key: str = "problem", id_key: str = "id") -> dict[int, int]:
    """Row index -> index of the first row of the earlier prompt whose normalized `key` text is equal.

    Compares distinct prompts (rows grouped by `id_key`; samples of one prompt are never duplicates of
    each other) and reports every row of each later prompt. Empty texts are never duplicates."""
    found = _over_rows(rows, key, id_key, exact=True, near=False)
    return {i: first for i, (first, _) in found.items()}


def _over_rows(rows: Sequence[dict], key: str, id_key: str, **options) -> dict[int, tuple[int, float]]:
    """find_duplicates over the distinct prompts of `rows`, mapped back to every row of each prompt."""
    firsts, more = _prompts(rows, id_key)
    texts = [_text(rows[f], key) for f in firsts]
    dups: dict[int, tuple[int, float]] = {}
    for p, (q, sim) in find_duplicates(texts, texts.__getitem__, **options).items():
        for i in _members(firsts[p], more):
            dups[i] = (firsts[q], sim)
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


def band_keys(sig: np.ndarray, bands: int, rows: int, salt: int = 0) -> np.ndarray:
    """One stable 64-bit key per LSH band: a polynomial hash of the band's `rows` MinHash values (one integer
    matrix product, wrapping modulo 2**64), mixed with the band's index (equal values in different bands are
    different buckets) and `salt`."""
    powers, salt_weight = _band_powers(rows)
    with np.errstate(over="ignore"):
        h = sig[: bands * rows].reshape(bands, rows) @ powers + np.uint64(salt) * salt_weight
        return _mix(h ^ (np.arange(bands, dtype=np.uint64) * _GOLDEN))


@lru_cache(maxsize=8)
def _band_powers(rows: int) -> tuple[np.ndarray, np.uint64]:
    """_POLY**(rows-1-j) for j < rows, and _POLY**rows, modulo 2**64."""
    powers, p = [], 1
    for _ in range(rows):
        powers.append(p)
        p = p * int(_POLY) % (1 << 64)
    return np.array(powers[::-1], dtype=np.uint64), np.uint64(p)


class BucketIndex:
    """Buckets of the kept prompts on disk: 64-bit key -> prompt indices, in a SQLite table.

    Dedup over a run holds ~16 LSH band keys for every kept prompt (4M keys for 250k prompts); as a Python
    dict of lists that is ~300 bytes a key and the filter's memory would grow with the run. SQLite (the
    standard library's, a B-tree with an index on the key) keeps them in a temporary file next to the
    output with a bounded page cache (`cache_kib`), so memory stays flat: new keys wait in a small dict and
    are written every `buffer` keys in one transaction; a lookup asks the dict and one indexed query."""

    def __init__(self, folder: str | Path | None = None, buffer: int = 1 << 15, cache_kib: int = 8192) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=".distill-buckets-", dir=folder)
        self.db = sqlite3.connect(str(Path(self._dir.name) / "buckets.sqlite"))
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", f"cache_size=-{cache_kib}"):
            self.db.execute(f"PRAGMA {pragma}")
        # one clustered B-tree ordered by key: no separate index to keep up
        self.db.execute(
            "CREATE TABLE bucket (k INTEGER NOT NULL, i INTEGER NOT NULL, PRIMARY KEY (k, i)) WITHOUT ROWID"
        )
        self.limit = buffer
        self.pending: dict[int, list[int]] = {}
        self.size = 0

    def add(self, keys: np.ndarray, index: int) -> None:
        """Store `index` under each key; call `flush_if_full` between blocks of lookups."""
        for k in keys.view(np.int64).tolist():  # SQLite integers are signed 64-bit
            self.pending.setdefault(k, []).append(index)
        self.size += len(keys)

    def flush_if_full(self) -> None:
        if self.size >= self.limit:
            self.flush()

    def lookup(self, keys: np.ndarray, stored: dict[int, list[int]] | None = None) -> list[int]:
        """Sorted distinct indices of the prompts under at least one of `keys`; `stored` is what `prefetch`
        returned for a block of lookups that contains these keys (else the database is asked now)."""
        signed = keys.view(np.int64).tolist()
        if stored is None:
            stored = self.prefetch(keys)
        return sorted({i for k in signed for i in (*self.pending.get(k, ()), *stored.get(k, ()))})

    def prefetch(self, keys: np.ndarray) -> dict[int, list[int]]:
        """The database's entries under `keys`, in one query per 30,000 keys: lookups of a block of prompts
        cost one round trip, valid until the next flush."""
        signed = np.unique(keys.view(np.int64)).tolist()
        out: dict[int, list[int]] = {}
        for a in range(0, len(signed), 30_000):  # SQLite allows 32,766 parameters in a statement
            part = signed[a : a + 30_000]
            for k, i in self.db.execute(f"SELECT k, i FROM bucket WHERE k IN ({','.join('?' * len(part))})", part):
                out.setdefault(k, []).append(i)
        return out

    def flush(self) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO bucket VALUES (?, ?)", ((k, i) for k, v in self.pending.items() for i in v)
            )
        self.pending, self.size = {}, 0

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()

    def __enter__(self) -> BucketIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    """Row index -> (first row of the earlier kept prompt, Jaccard similarity) for near-duplicate prompts
    (find_duplicates with near=True over the distinct prompts of `rows`). Includes exact duplicates
    (similarity 1.0). Deterministic: stable hashes and row order only."""
    return _over_rows(
        rows, key, id_key, exact=False, near=True, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed,
        same_numbers=same_numbers,
    )  # fmt: skip


def find_duplicates(
    texts: Iterable[str],
    fetch: Callable[[int], str],
    exact: bool = True,
    near: bool = True,
    threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 0,
    same_numbers: bool = True,
    folder: str | Path | None = None,
) -> dict[int, tuple[int, float]]:
    """Prompt index -> (index of the earlier prompt it duplicates, similarity), over distinct prompts given
    in order; `fetch(i)` returns the text of prompt i again (a candidate's text is re-read, not kept).

    exact: equal after `normalize` -> (the first prompt with that text, 1.0); it takes precedence.
    near: shingles are character `ngram`-grams of the normalized text: math problems are short (30-100
    words), and a one-word rewording changes up to 5 of ~40 word 5-grams (Jaccard ~0.75, missed at 0.8) but
    only ~10 of ~250 character 5-grams (~0.92). Candidates come from LSH bands over `num_perm` MinHash values
    and are kept only when the exact Jaccard of the shingle sets is >= `threshold` (no false positives from
    the sketch). Greedy in order: a prompt is a duplicate of the EARLIEST earlier KEPT prompt it matches. With
    `same_numbers`, the two problems must also hold the same numbers in the same order.
    Memory does not grow with the number of prompts beyond the result: the buckets live in SQLite files in
    `folder` (default: the system's temporary folder), removed at the end."""
    if near and not 0.0 < threshold <= 1.0:
        raise DistillError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    if ngram < 1 or num_perm < 1:
        raise DistillError("near-duplicate ngram and num_perm must be at least 1")
    seeds = _seeds(num_perm, seed)
    bands, r = lsh_params(threshold, num_perm) if near else (0, 0)
    dups: dict[int, tuple[int, float]] = {}
    with BucketIndex(folder) as firsts, BucketIndex(folder) as buckets:
        block: list[tuple[int, str]] = []

        def run_block() -> None:
            # keys of the whole block first, so each index answers the block in one query
            work = []
            for p, text in block:
                norm = normalize(text)
                if not norm:
                    continue
                digest = _digest64(norm) if exact else None
                sh = keys = None
                if near:
                    sh = shingles(norm, ngram)
                    # With same_numbers, the numbers salt every bucket key: templated prompts ("A train travels
                    # 60 km ...") that differ only in their numbers never share a bucket, so their candidate
                    # lists stay short and a million of them cost linear time, not a comparison with each other.
                    salt = _numbers_salt(norm) if same_numbers else 0
                    keys = band_keys(minhash(sh, seeds), bands, r, salt)
                work.append((p, norm, digest, sh, keys))
            if not work:
                return
            known = firsts.prefetch(np.concatenate([w[2] for w in work])) if exact else {}
            stored = buckets.prefetch(np.concatenate([w[4] for w in work])) if near else {}
            for p, norm, digest, sh, keys in work:
                if exact:
                    same = next((c for c in firsts.lookup(digest, known) if normalize(fetch(c)) == norm), None)
                    if same is not None:
                        dups[p] = (same, 1.0)
                        continue
                    firsts.add(digest, p)
                if not near:
                    continue
                match = None
                for c in buckets.lookup(keys, stored):  # earliest kept prompt that really is similar
                    c_norm = normalize(fetch(c))
                    if same_numbers and _numbers(c_norm) != _numbers(norm):  # a 64-bit key collision
                        continue
                    sim = jaccard(sh, shingles(c_norm, ngram))
                    if sim >= threshold:
                        match = (c, round(sim, 4))
                        break
                if match is not None:
                    dups[p] = match
                else:
                    buckets.add(keys, p)
            firsts.flush_if_full()
            buckets.flush_if_full()

        for p, text in enumerate(texts):
            block.append((p, text))
            if len(block) == 1024:
                run_block()
                block.clear()
        run_block()
    return dups


def _digest64(norm: str) -> np.ndarray:
    return np.frombuffer(hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=8).digest(), np.uint64)


def _numbers_salt(normalized: str) -> int:
    digest = hashlib.blake2b("\x00".join(_numbers(normalized)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


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
