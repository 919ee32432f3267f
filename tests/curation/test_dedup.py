"""Duplicate prompts and benchmark decontamination (distill.curation.dedup): exact, near, n-gram overlap."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from distill.common.errors import DistillError
from distill.curation import dedup
from distill.curation.dedup import (
    BucketIndex,
    Contamination,
    exact_duplicates,
    load_benchmark_problems,
    lsh_params,
    near_duplicates,
    ngrams,
    normalize,
)

BAKER = "A baker makes 6 trays of rolls with 14 rolls on each tray. She sells 59 rolls. How many rolls are left?"
BAKER_REWORDED = BAKER.replace("makes", "bakes")
BAKER_MORE = BAKER.replace("6 trays", "7 trays")
TOM = "Tom reads 23 pages on Monday and twice as many on Tuesday. How many pages does he read on the two days?"
CIRCLE = (
    "The circle $x^2 + y^2 - 6x + 4y - 12 = 0$ has its center at $(h, k)$ and radius $r$. "
    "What is the value of $h + k + r$?"
)


def rows_of(*problems, samples=2):
    """Trace-like rows: `samples` rows per prompt, one id per prompt."""
    return [{"id": f"p{i}", "sample": s, "problem": p} for i, p in enumerate(problems) for s in range(samples)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  What's   the VALUE of $x$?\n", "whats the value of x"),
        ("Solve 2x+3=7.", "solve 2x + 3 = 7"),
        ("Solve 2x + 3 = 7", "solve 2x + 3 = 7"),
        ("It costs $1,000 or 1{,}000 dollars; 3.5 kg.", "it costs 1000 or 1000 dollars 3 5 kg".replace("3 5", "3.5")),
        ("Find \\frac{1}{2} of a two-digit number.", "find frac 1 2 of a two digit number"),
        ("x−1 ≤ 5 -- done", "x - 1 ≤ 5 done"),
        ("Ｘ² = ４", "x2 = 4"),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_exact_duplicates_are_over_distinct_prompts():
    rows = rows_of(
        BAKER,
        TOM,
        "  a BAKER makes 6 trays of rolls, with 14 rolls on each tray. she sells 59 rolls -- "
        + "how many rolls are left",
    )
    # the two samples of each prompt are not duplicates of each other; both rows of prompt 2 map to row 0
    assert exact_duplicates(rows) == {4: 0, 5: 0}
    assert exact_duplicates(rows_of(BAKER, TOM)) == {}
    # rows without ids are each their own prompt
    assert exact_duplicates([{"problem": BAKER}, {"problem": BAKER.upper()}, {"problem": ""}, {"problem": ""}]) == {
        1: 0
    }


def test_near_duplicates_find_a_one_word_rewording_and_not_different_problems():
    rows = rows_of(BAKER, TOM, BAKER_REWORDED, CIRCLE)
    dups = near_duplicates(rows)
    assert set(dups) == {4, 5}
    first, sim = dups[4]
    assert first == 0 and 0.8 <= sim < 1.0
    # exact copies count too, with similarity 1.0
    assert near_duplicates(rows_of(BAKER, BAKER.lower())) == {2: (0, 1.0), 3: (0, 1.0)}


def test_near_duplicates_keep_problems_whose_numbers_differ():
    swapped = (
        "At the zoo, adult tickets cost $16 and child tickets cost $4. A family buys 3 adult tickets and 2 child "
        "tickets. How many dollars do they pay?"
    )
    rows = rows_of(BAKER, BAKER_MORE, swapped, swapped.replace("3 adult", "2 adult").replace("2 child t", "3 child t"))
    assert near_duplicates(rows) == {}  # different numbers, or the same numbers in another order
    loose = near_duplicates(rows, same_numbers=False)
    assert loose[2][0] == 0 and loose[6][0] == 4


def test_near_duplicates_never_compare_templated_prompts_whose_numbers_differ(monkeypatch):
    # A generated dataset of one template with other numbers: every pair is near in text, none is a duplicate.
    # The numbers are part of each LSH bucket key, so no pair even becomes a candidate (linear time), while
    # without same_numbers every variant is compared with the first one.
    calls = []
    real = dedup.jaccard
    monkeypatch.setattr(dedup, "jaccard", lambda a, b: calls.append(1) or real(a, b))
    rows = [{"id": str(i), "problem": BAKER.replace("6 trays", f"{i + 10} trays")} for i in range(300)]
    assert near_duplicates(rows) == {}
    assert calls == []
    loose = near_duplicates(rows, same_numbers=False)
    assert len(loose) > 290 and len(calls) >= len(loose)  # near in text: nearly all are flagged without numbers


def test_near_duplicates_greedy_against_kept_prompts_only():
    # b is near a (0.79); c is near b (0.62) but not near a (0.47). b is dropped as a copy of a, and c is
    # compared with kept prompts only, so it stays: kept prompts never match each other.
    a = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    b = a.replace("seven", "heptagon")
    c = b.replace("eleven", "hendecagon").replace("three", "triangle")
    rows = [{"id": "a", "problem": a}, {"id": "b", "problem": b}, {"id": "c", "problem": c}]
    assert near_duplicates(rows, threshold=0.6) == {1: (0, 0.7857)}
    assert near_duplicates(rows[1:], threshold=0.6) == {1: (0, 0.6162)}


def test_near_duplicates_are_identical_across_runs_and_processes(tmp_path):
    from distill.problems.tasks import builtin_problems

    problems = [p["problem"] for p in builtin_problems("train", 300, seed=1, levels=[1, 2, 3])]
    rows = [{"id": str(i), "problem": p} for i, p in enumerate(problems + [problems[5].replace("How", "how")])]
    first = near_duplicates(rows, same_numbers=False)
    assert first == near_duplicates(rows, same_numbers=False)
    assert first[300] == (5, 1.0)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code = (
        "import json, sys; from distill.curation.dedup import near_duplicates; "
        f"rows = json.load(open({str(tmp_path / 'rows.json')!r})); "
        "print(json.dumps(sorted((k, list(v)) for k, v in near_duplicates(rows, same_numbers=False).items())))"
    )
    for hashseed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
        ).stdout
        assert json.loads(out) == [[k, list(v)] for k, v in sorted(first.items())]


def test_lsh_params_fit_the_signature():
    for threshold in (0.5, 0.8, 0.9):
        b, r = lsh_params(threshold, 128)
        assert b * r <= 128 and b >= 1 and r >= 1
    assert lsh_params(0.9, 128)[1] > lsh_params(0.5, 128)[1]  # a higher threshold needs longer bands


def test_near_duplicates_reject_bad_settings():
    with pytest.raises(DistillError, match="threshold"):
        near_duplicates(rows_of(BAKER), threshold=1.5)


# --------------------------------------------------------------------------------------------------
# Decontamination

MATH_LIKE = [
    {"problem": CIRCLE, "answer": "5", "unique_id": "test/algebra/1.json"},
    {
        "problem": "How many positive whole-number divisors does 196 have?",
        "answer": "9",
        "unique_id": "test/number_theory/2.json",
    },
    {"problem": "Compute $\\dbinom{8}{4}$.", "answer": "70", "unique_id": "test/counting/3.json"},
]


@pytest.fixture
def local_bench(tmp_path):
    (tmp_path / "mini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MATH_LIKE))
    d = tmp_path / "mini-math.yaml"
    d.write_text("description: three MATH-like problems\ndataset: mini.jsonl\nid_column: unique_id\n")
    return str(d)


def test_ngrams_are_over_normalized_words():
    assert ngrams("A b c", n=2) == {("a", "b"), ("b", "c")}
    assert ngrams("too short", n=8) == set()


def test_contamination_hits_and_misses(local_bench):
    benchmarks = load_benchmark_problems([local_bench])
    assert benchmarks == [("mini-math", [r["problem"] for r in MATH_LIKE])]
    index = Contamination.build_index(benchmarks, n=8)

    embedded = f"Here is a hard one from a contest. {CIRCLE.upper().replace('$', '')} Show your work."
    hits = index.check(embedded)
    assert [(m.benchmark, m.index, m.exact) for m in hits] == [("mini-math", 0, False)]
    assert hits[0].count >= 10 and len(hits[0].example.split()) == 8

    # shares only common words and short phrases with the benchmark problem
    other = (
        "The square has its side equal to $s$ and its diagonal $d$. What is the value of $s + d$ when "
        "the circle around it has radius 4?"
    )
    assert index.check(other) == []

    # shorter than 8 words: only exact normalized equality counts
    short = index.check("compute \\dbinom{8}{4}")
    assert [(m.index, m.exact) for m in short] == [(2, True)]
    assert index.check("Compute $\\dbinom{9}{4}$.") == []


def test_contamination_min_matches_and_boilerplate():
    template = "The input is given from Standard Input in the following format"
    problems = [
        f"{template}. Problem {i}: count the {w} in the grid and print it." for i, w in enumerate("abcdefghijkl")
    ]
    index = Contamination.build_index([("lcb-like", problems)], n=8, boilerplate=10)
    assert index.check(f"Read carefully. {template}: N then M.") == []  # the shared template is not content
    strict = Contamination.build_index([("lcb-like", problems)], n=8, min_matches=50)
    assert strict.check(problems[3] + " extra words here") == []  # too few shared n-grams
    assert [m.index for m in index.check(problems[3])][0] == 3


def test_load_benchmark_problems_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DistillError, match=r"benchmark math500: cannot load 'HuggingFaceH4/MATH-500'.*local:"):
        load_benchmark_problems(["math500"])
    assert time.monotonic() - start < 10
    with pytest.raises(DistillError, match="builtin.*number of problems"):
        load_benchmark_problems(["builtin"])
    [(name, problems)] = load_benchmark_problems(["builtin"], num=5)
    assert name == "builtin" and len(problems) == 5


def test_bucket_index_finds_what_a_dict_of_lists_finds_across_flushes(tmp_path):
    rng = np.random.default_rng(0)
    index, naive = BucketIndex(tmp_path, buffer=50), {}
    pool = rng.integers(0, 2**63, size=300, dtype=np.uint64)  # keys repeat: buckets with several members
    for i in range(400):
        keys = rng.choice(pool, size=4)
        want = sorted({j for k in keys.tolist() for j in naive.get(k, ())})
        assert index.lookup(keys) == want, i
        index.add(keys, i)
        index.flush_if_full()
        for k in keys.tolist():
            naive.setdefault(k, []).append(i)
    (stored,) = index.db.execute("SELECT COUNT(*) FROM bucket").fetchone()
    distinct = {(k, i) for k, members in naive.items() for i in members}
    waiting = {(k % 2**64, i) for k, members in index.pending.items() for i in members}  # keys stored signed
    assert index.size < 50 and waiting <= distinct  # all on disk but the last few, waiting in the buffer
    assert stored == len(distinct - waiting) > 1500
    index.close()
    assert list(tmp_path.iterdir()) == []  # the temporary database is gone
