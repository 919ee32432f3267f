"""Tests for distill.curation.selection: which verified samples of a prompt are kept, and the pass-rate
window over prompts."""

from __future__ import annotations

import random

import pytest

from distill.common.errors import DistillError
from distill.curation.selection import pass_rate_filter, select_per_prompt


def sample(pid: str, i: int, tokens: int, correct: bool = True) -> dict:
    return {"id": pid, "sample": i, "completion_tokens": tokens, "correct": correct, "completion": f"{pid}-{i}"}


ROWS = [
    sample("a", 0, 300),
    sample("a", 1, 100),
    sample("a", 2, 200),
    sample("a", 3, 100),
    sample("a", 4, 50, correct=False),
    sample("b", 0, 500),
    sample("c", 0, 10, correct=False),
]


def ids(rows: list[dict]) -> list[tuple[str, int]]:
    return [(r["id"], r["sample"]) for r in rows]


def test_shortest_keeps_the_k_shortest_correct_samples_ties_by_sample_index():
    kept, dropped = select_per_prompt(ROWS, 2)
    assert ids(kept) == [("a", 1), ("a", 3), ("b", 0)]  # input order; a/4 is shorter but wrong
    reasons = {(r["id"], r["sample"]): r["reject_reason"] for r in dropped}
    assert reasons == {
        ("a", 0): "selection: over_k",
        ("a", 2): "selection: over_k",
        ("a", 4): "selection: not_correct",
        ("c", 0): "selection: not_correct",
    }
    kept1, _ = select_per_prompt(ROWS, 1)
    assert ids(kept1) == [("a", 1), ("b", 0)]  # a/1 and a/3 tie on length: the lower index wins


def test_selection_does_not_modify_its_input():
    before = [dict(r) for r in ROWS]
    _, dropped = select_per_prompt(ROWS, 1)
    assert ROWS == before
    assert all("reject_reason" not in r for r in ROWS) and dropped


def test_random_selection_is_reproducible_and_independent_of_input_order():
    rows = [sample(p, i, 100 + i) for p in "abcdef" for i in range(8)]
    kept, dropped = select_per_prompt(rows, 3, strategy="random", seed=7)
    assert len(kept) == 18 and len(dropped) == 30
    for p in "abcdef":
        assert sum(r["id"] == p for r in kept) == 3
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    kept_shuffled, _ = select_per_prompt(shuffled, 3, strategy="random", seed=7)
    assert sorted(ids(kept_shuffled)) == sorted(ids(kept))
    assert ids(select_per_prompt(rows, 3, strategy="random", seed=7)[0]) == ids(kept)
    # a random draw, not the shortest: across seeds the choice changes
    draws = {tuple(ids(select_per_prompt(rows, 3, strategy="random", seed=s)[0])) for s in range(5)}
    assert len(draws) > 1
    assert ids(select_per_prompt(rows, 3)[0]) == [(p, i) for p in "abcdef" for i in range(3)]


def test_shortest_is_independent_of_input_order():
    shuffled = ROWS[::-1]
    assert sorted(ids(select_per_prompt(shuffled, 2)[0])) == sorted(ids(select_per_prompt(ROWS, 2)[0]))


def test_bad_selection_options_name_the_flag():
    with pytest.raises(DistillError, match="--max-per-prompt"):
        select_per_prompt(ROWS, 0)
    with pytest.raises(DistillError, match="--selection"):
        select_per_prompt(ROWS, 1, strategy="longest")


def test_pass_rate_filter_keeps_prompts_in_the_range_inclusive():
    rows = (
        [sample("all", i, 10) for i in range(4)]  # rate 1.0
        + [sample("half", i, 10, correct=i < 2) for i in range(4)]  # 0.5
        + [sample("quarter", i, 10, correct=i == 0) for i in range(4)]  # 0.25
        + [sample("none", i, 10, correct=False) for i in range(4)]  # 0.0
    )
    kept, dropped, rates = pass_rate_filter(rows, 0.25, 0.5)
    assert rates == {"all": 1.0, "half": 0.5, "quarter": 0.25, "none": 0.0}
    assert {r["id"] for r in kept} == {"half", "quarter"} and len(kept) == 8  # wrong samples stay with their prompt
    assert {r["id"] for r in dropped} == {"all", "none"}
    assert {r["reject_reason"] for r in dropped} == {"selection: pass_rate_out_of_range"}
    # defaults keep everything; open ranges for GRPO drop the always/never solved prompts
    assert len(pass_rate_filter(rows)[0]) == 16
    assert {r["id"] for r in pass_rate_filter(rows, 0.01, 0.99)[0]} == {"half", "quarter"}
    assert {r["id"] for r in pass_rate_filter(rows, 1.0, 1.0)[0]} == {"all"}


def test_bad_pass_rate_options_name_the_flags():
    with pytest.raises(DistillError, match="--min-pass-rate"):
        pass_rate_filter([], 0.8, 0.2)
    with pytest.raises(DistillError, match="--max-pass-rate"):
        pass_rate_filter([], 0.0, 1.5)
