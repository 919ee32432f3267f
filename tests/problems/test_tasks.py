"""Tests for distill.problems.tasks: determinism, shape, split disjointness, answer correctness, argument checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from distill.common.errors import DistillError
from distill.problems.tasks import LEVELS, SPLITS, builtin_problems

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"id", "problem", "answer", "domain", "level", "split"}


def _digest(problems: list[dict]) -> str:
    return hashlib.sha256(json.dumps(problems, sort_keys=True).encode()).hexdigest()


def _div(a: int, b: int) -> int:
    assert a % b == 0, f"{a} is not divisible by {b}"
    return a // b


# An independent solver: one regex per story template (numbers as named groups), with the level it must
# have and the formula for its answer. Written from the problem text alone, not from the generator code.
N = r"[A-Z][a-z]+"  # a name
W = r"[a-z ]+"  # a noun phrase
P = r"(?:she|he)"
CP = r"(?:She|He)"
LEGS = {"cows": 4, "goats": 4, "sheep": 4, "pigs": 4, "horses": 4, "ducks": 2, "geese": 2}
SOLVERS: list[tuple[int, str, Callable[[dict], int]]] = [
    (1, rf"{N} has (?P<a>\d+) {W} and buys (?P<b>\d+) more\. How many {W} does {P} have now\?",
     lambda v: v["a"] + v["b"]),
    (1, rf"{N} had (?P<a>\d+) {W} and gave (?P<b>\d+) of them to {N}\. How many {W} does {N} have left\?",
     lambda v: v["a"] - v["b"]),
    (1, rf"A {W} ticket costs \$(?P<p>\d+)\. {N} buys (?P<k>\d+) tickets\. How many dollars does {P} pay\?",
     lambda v: v["p"] * v["k"]),
    (1, rf"{N} shares {W} equally among (?P<k>\d+) friends\. {CP} has (?P<a>\d+) {W}\. How many does each friend get\?",
     lambda v: _div(v["a"], v["k"])),
    (1, rf"{N} cycles at (?P<s>\d+) km per hour for (?P<h>\d+) hours\. How many kilometers does {P} ride\?",
     lambda v: v["s"] * v["h"]),
    (2, rf"{N} buys (?P<a>\d+) {W} for \$(?P<p>\d+) each and a {W} for \$(?P<c>\d+)\. "
        rf"How many dollars does {P} spend in total\?", lambda v: v["a"] * v["p"] + v["c"]),
    (2, rf"{N} has \$(?P<h>\d+) in a piggy bank and saves \$(?P<w>\d+) every week\. "
        rf"How many dollars will {P} have after (?P<k>\d+) weeks\?", lambda v: v["h"] + v["w"] * v["k"]),
    (2, r"A farmer has (?P<a>\d+) (?P<animal>[a-z]+) and buys (?P<b>\d+) more\. How many legs do all the "
        r"(?P=animal) have together\?", lambda v: LEGS[v["animal"]] * (v["a"] + v["b"])),
    (2, r"A classroom has (?P<r>\d+) rows with (?P<d>\d+) desks in each row\. (?P<e>\d+) desks are empty\. "
        r"How many desks have a student sitting at them\?", lambda v: v["r"] * v["d"] - v["e"]),
    (2, rf"{N} bakes (?P<a>\d+) cookies and eats (?P<b>\d+) of them\. {CP} shares the rest equally among "
        r"(?P<k>\d+) friends\. How many cookies does each friend get\?", lambda v: _div(v["a"] - v["b"], v["k"])),
    (3, rf"{N} buys (?P<a>\d+) {W} for \$(?P<p>\d+) each and a {W} for \$(?P<c>\d+)\. {CP} pays with a "
        rf"\$(?P<bill>\d+) bill\. How many dollars of change does {P} get\?",
     lambda v: v["bill"] - (v["a"] * v["p"] + v["c"])),
    (3, r"A car drives at (?P<s1>\d+) km per hour for (?P<h1>\d+) hours and then at (?P<s2>\d+) km per hour "
        r"for (?P<h2>\d+) hours\. How many kilometers does it drive in total\?",
     lambda v: v["s1"] * v["h1"] + v["s2"] * v["h2"]),
    (3, rf"A recipe for (?P<b>\d+) pancakes uses (?P<f>\d+) grams of flour\. {N} wants to make (?P<m>\d+) "
        rf"pancakes and already has (?P<h>\d+) grams of flour\. How many more grams of flour does {P} need\?",
     lambda v: _div(v["m"], v["b"]) * v["f"] - v["h"]),
    (3, r"At the zoo, adult tickets cost \$(?P<a>\d+) and child tickets cost \$(?P<c>\d+)\. A family buys "
        r"(?P<x>\d+) adult tickets and (?P<y>\d+) child tickets\. How many dollars do they pay\?",
     lambda v: v["a"] * v["x"] + v["c"] * v["y"]),
    (3, r"A library has (?P<s>\d+) shelves with (?P<p>\d+) books on each shelf\. (?P<l>\d+) books are borrowed "
        r"and (?P<n>\d+) new books are added to the shelves\. How many books are on the shelves now\?",
     lambda v: v["s"] * v["p"] - v["l"] + v["n"]),
    (4, rf"{N} has \$(?P<h>\d+)\. Every week {P} earns \$(?P<e>\d+) for chores and spends \$(?P<s>\d+) on "
        rf"snacks\. After (?P<k>\d+) weeks, {P} buys a {W} for \$(?P<p>\d+)\. How many dollars does {P} have left\?",
     lambda v: v["h"] + (v["e"] - v["s"]) * v["k"] - v["p"]),
    (4, r"A farmer has (?P<c>\d+) chickens and (?P<g>\d+) cows\. The farmer sells (?P<s>\d+) of the cows\. "
        r"How many legs do the remaining animals have in total\?", lambda v: 2 * v["c"] + 4 * (v["g"] - v["s"])),
    (4, r"A bus leaves the station with (?P<a>\d+) passengers\. At the first stop, (?P<b>\d+) people get off "
        r"and (?P<c>\d+) get on\. At the second stop, (?P<d>\d+) people get off\. Each passenger still on the "
        r"bus pays \$(?P<f>\d+) at the last stop\. How many dollars are collected at the last stop\?",
     lambda v: (v["a"] - v["b"] + v["c"] - v["d"]) * v["f"]),
    (4, rf"{N} bakes (?P<t>\d+) trays of (?P<m>\d+) muffins each\. {CP} sells (?P<s>\d+) muffins and gives "
        rf"(?P<g>\d+) to (?:her|his) {W}\. {CP} packs the rest into boxes of (?P<b>\d+)\. "
        rf"How many boxes does {P} fill\?", lambda v: _div(v["t"] * v["m"] - v["s"] - v["g"], v["b"])),
    (4, rf"{N} buys (?P<a>\d+) {W} for \$(?P<pa>\d+) each and (?P<b>\d+) {W} for \$(?P<pb>\d+) each\. {CP} "
        rf"pays with a \$(?P<bill>\d+) bill\. How many dollars of change does {P} get\?",
     lambda v: v["bill"] - v["a"] * v["pa"] - v["b"] * v["pb"]),
    (5, r"A group of (?P<k>\d+) friends buys (?P<a>\d+) pizzas for \$(?P<p>\d+) each and (?P<b>\d+) drinks for "
        r"\$(?P<q>\d+) each\. They use a coupon for \$(?P<c>\d+) off and split the bill equally\. "
        r"How many dollars does each friend pay\?",
     lambda v: _div(v["a"] * v["p"] + v["b"] * v["q"] - v["c"], v["k"])),
    (5, r"A truck drives for (?P<h1>\d+) hours at (?P<s1>\d+) km per hour and then for (?P<h2>\d+) hours at "
        r"(?P<s2>\d+) km per hour\. It uses one liter of fuel for every (?P<L>\d+) kilometers, and fuel costs "
        r"\$(?P<c>\d+) per liter\. How many dollars does the fuel cost\?",
     lambda v: _div(v["s1"] * v["h1"] + v["s2"] * v["h2"], v["L"]) * v["c"]),
    (5, r"A school has (?P<c>\d+) classes with (?P<s>\d+) students in each class\. On the day of the museum "
        r"trip, (?P<a>\d+) students are absent\. The others ride in buses that hold (?P<cap>\d+) students each, "
        r"and every bus is full\. Each bus costs \$(?P<bc>\d+) to rent, and the museum charges a group fee of "
        r"\$(?P<f>\d+)\. How many dollars does the trip cost in total\?",
     lambda v: _div(v["c"] * v["s"] - v["a"], v["cap"]) * v["bc"] + v["f"]),
    (5, r"A farmer has (?P<h>\d+) hens, and each hen lays (?P<e>\d+) eggs per week\. After (?P<w>\d+) weeks, "
        r"the farmer keeps (?P<k>\d+) eggs and sells the rest in cartons of 12\. Each carton sells for "
        r"\$(?P<p>\d+)\. How many dollars does the farmer earn\?",
     lambda v: _div(v["h"] * v["e"] * v["w"] - v["k"], 12) * v["p"]),
    (5, rf"{N} already has \$(?P<s>\d+) saved\. {CP} earns \$(?P<w>\d+) per hour and works (?P<h>\d+) hours "
        rf"each week\. After (?P<k>\d+) weeks, {P} spends \$(?P<j>\d+) on a jacket and splits the rest equally "
        r"into (?P<m>\d+) savings jars\. How many dollars go into each jar\?",
     lambda v: _div(v["s"] + v["w"] * v["h"] * v["k"] - v["j"], v["m"])),
]  # fmt: skip


# The unseen split's own stories: none of them may match a train/test template, and the reverse.
UNSEEN_SOLVERS: list[tuple[int, str, Callable[[dict], int]]] = [
    (1, rf"{N} keeps (?P<a>\d+) stamps in a blue album and (?P<b>\d+) stamps in a red album\. "
        r"How many stamps are in both\?", lambda v: v["a"] + v["b"]),
    (1, r"A baker fills (?P<n>\d+) baskets with (?P<k>\d+) rolls in each basket\. How many rolls are in the "
        r"baskets\?", lambda v: v["n"] * v["k"]),
    (2, rf"{N} reads (?P<a>\d+) pages every day for (?P<d>\d+) days and then (?P<b>\d+) pages on the last day\. "
        rf"How many pages does {P} read in total\?", lambda v: v["a"] * v["d"] + v["b"]),
    (2, rf"{N} has a ribbon (?P<L>\d+) cm long\. {CP} cuts off (?P<c>\d+) cm and divides the rest into (?P<k>\d+) "
        r"equal pieces\. How many centimeters long is each piece\?", lambda v: _div(v["L"] - v["c"], v["k"])),
    (3, rf"A garden has (?P<r>\d+) rows of (?P<p>\d+) tomato plants, and each plant gives (?P<t>\d+) tomatoes\. "
        rf"{N} gives away (?P<g>\d+) tomatoes\. How many tomatoes are left\?",
     lambda v: v["r"] * v["p"] * v["t"] - v["g"]),
    (3, r"A tank holds (?P<cap>\d+) liters and has (?P<w>\d+) liters of water in it\. A pump adds (?P<r>\d+) "
        r"liters every minute for (?P<m>\d+) minutes\. How many more liters are needed to fill the tank\?",
     lambda v: v["cap"] - v["w"] - v["r"] * v["m"]),
    (4, r"A class sells (?P<a>\d+) cupcakes for \$(?P<pa>\d+) each and (?P<b>\d+) cookies for \$(?P<pb>\d+) each "
        r"at a bake sale\. The ingredients cost \$(?P<c>\d+)\. How many dollars of profit does the class make\?",
     lambda v: v["a"] * v["pa"] + v["b"] * v["pb"] - v["c"]),
    (4, r"A train has (?P<n>\d+) cars with (?P<s>\d+) seats in each car\. At the first station (?P<f>\d+) "
        r"passengers sit down\. At the second station (?P<b>\d+) more passengers board and (?P<l>\d+) get off\. "
        r"Every passenger has a seat\. How many seats are empty now\?",
     lambda v: v["n"] * v["s"] - v["f"] - v["b"] + v["l"]),
    (5, rf"{N} paints a fence of (?P<n>\d+) panels, each (?P<w>\d+) meters wide and (?P<h>\d+) meters tall\. "
        r"One can of paint covers (?P<c>\d+) square meters and costs \$(?P<p>\d+)\. "
        rf"{CP} already has (?P<have>\d+) cans\. How many dollars does {P} spend on the cans {P} still needs\?",
     lambda v: (_div(v["n"] * v["w"] * v["h"], v["c"]) - v["have"]) * v["p"]),
    (5, r"An orchard has (?P<t>\d+) trees, and each tree gives (?P<a>\d+) apples\. (?P<b>\d+) apples are "
        r"bruised and thrown away\. The rest are packed into bags of (?P<s>\d+), and each bag sells for "
        r"\$(?P<p>\d+)\. The market stall costs \$(?P<m>\d+)\. How many dollars does the orchard make after "
        r"paying for the stall\?", lambda v: _div(v["t"] * v["a"] - v["b"], v["s"]) * v["p"] - v["m"]),
]  # fmt: skip


def _solve(problem: str, solvers: list = SOLVERS) -> tuple[int, int, int]:
    """(template index, level, answer) of the one template whose regex matches the whole problem; no template
    of the other table (train/test vs unseen) may match it."""
    other = UNSEEN_SOLVERS if solvers is SOLVERS else SOLVERS
    assert not [rx for _, rx, _ in other if re.fullmatch(rx, problem)], f"a template of the other table: {problem!r}"
    hits = [(i, re.fullmatch(rx, problem)) for i, (_, rx, _) in enumerate(solvers)]
    hits = [(i, m) for i, m in hits if m]
    assert len(hits) == 1, f"{len(hits)} templates match: {problem!r}"
    i, match = hits[0]
    level, _, formula = solvers[i]
    return i, level, formula({k: int(v) if v.isdigit() else v for k, v in match.groupdict().items()})


@pytest.fixture(scope="module")
def big() -> dict[str, list[dict]]:
    return {split: builtin_problems(split, 3000, seed=0) for split in SPLITS}


def test_deterministic_within_process() -> None:
    assert builtin_problems("train", 50, seed=3) == builtin_problems("train", 50, seed=3)
    assert builtin_problems("test", 50, seed=3, levels=(2, 4)) == builtin_problems("test", 50, seed=3, levels=[2, 4])


def test_deterministic_across_processes() -> None:
    code = (
        "import hashlib, json; from distill.problems.tasks import builtin_problems as b; "
        "print(hashlib.sha256(json.dumps(b('train', 200, seed=11) + b('test', 200, seed=11), "
        "sort_keys=True).encode()).hexdigest())"
    )
    for hashseed in ("1", "2"):  # different string-hash salts must not change anything
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
        )
        expected = _digest(builtin_problems("train", 200, seed=11) + builtin_problems("test", 200, seed=11))
        assert out.stdout.strip() == expected


def test_seed_changes_output() -> None:
    texts = lambda seed: [p["problem"] for p in builtin_problems("train", 20, seed=seed)]  # noqa: E731
    assert texts(0) != texts(1)


def test_shape_and_types() -> None:
    for split in SPLITS:
        problems = builtin_problems(split, 40, seed=5)
        assert len(problems) == 40
        for p in problems:
            assert set(p) == KEYS
            assert isinstance(p["id"], str) and isinstance(p["problem"], str) and isinstance(p["answer"], str)
            assert type(p["level"]) is int and p["level"] in LEVELS
            assert p["domain"] == "math" and p["split"] == split
            assert re.fullmatch(rf"builtin-{split}-L{p['level']}-\d{{5}}", p["id"])
            assert p["problem"].endswith("?") and p["problem"][0].isupper()
    assert builtin_problems("train", 0) == []


def test_ids_unique_and_stable(big: dict[str, list[dict]]) -> None:
    for problems in big.values():
        assert len({p["id"] for p in problems}) == len(problems)
    assert big["train"][17]["id"] == "builtin-train-L3-00017"


def test_levels_round_robin() -> None:
    problems = builtin_problems("train", 10, seed=1, levels=(3, 1, 5))
    assert [p["level"] for p in problems] == [3, 1, 5, 3, 1, 5, 3, 1, 5, 3]
    counts = Counter(p["level"] for p in builtin_problems("test", 23))
    assert counts == {1: 5, 2: 5, 3: 5, 4: 4, 5: 4}
    only_two = builtin_problems("train", 7, levels=(2,))
    assert {p["level"] for p in only_two} == {2} and len({p["problem"] for p in only_two}) == 7


def test_prefix_stable() -> None:
    assert builtin_problems("test", 30, seed=2)[:12] == builtin_problems("test", 12, seed=2)


def test_no_duplicates_within_call(big: dict[str, list[dict]]) -> None:
    for problems in big.values():
        assert len({p["problem"] for p in problems}) == len(problems)
    small = builtin_problems("train", 2000, seed=4, levels=(1,))  # the smallest number ranges
    assert len({p["problem"] for p in small}) == 2000


def test_train_test_disjoint(big: dict[str, list[dict]]) -> None:
    assert not {p["problem"] for p in big["train"]} & {p["problem"] for p in big["test"]}
    for seed in (1, 2):
        train = {p["problem"] for p in builtin_problems("train", 1500, seed=seed, levels=(1, 2))}
        test = {p["problem"] for p in builtin_problems("test", 1500, seed=seed, levels=(1, 2))}
        assert not train & test


def test_unseen_split_shares_no_text_and_no_story_with_train_or_test(big: dict[str, list[dict]]) -> None:
    # its stories come from other templates (checked one by one in test_every_answer_rederived_independently)
    texts = {p["problem"] for p in big["unseen"]}
    assert len(texts) == 3000 and not texts & (
        {p["problem"] for p in big["train"]} | {p["problem"] for p in big["test"]}
    )
    first_words = lambda rows: {" ".join(p["problem"].split()[1:4]) for p in rows}  # noqa: E731
    assert not first_words(big["unseen"]) & first_words(big["train"])


def test_disjoint_by_construction(big: dict[str, list[dict]]) -> None:
    """The first integer in the text is even in train and odd in test, so the splits can never share a text."""
    for split, parity in (("train", 0), ("test", 1)):
        for p in big[split]:
            assert int(re.search(r"\d+", p["problem"]).group()) % 2 == parity, p["problem"]


def test_answers_are_plain_positive_integers(big: dict[str, list[dict]]) -> None:
    for problems in big.values():
        for p in problems:
            assert re.fullmatch(r"[1-9]\d*", p["answer"]), p
            if p["level"] <= 2:
                assert int(p["answer"]) <= 200, p


def test_every_answer_rederived_independently(big: dict[str, list[dict]]) -> None:
    for split, problems in big.items():
        solvers = UNSEEN_SOLVERS if split == "unseen" else SOLVERS
        used = Counter()
        for p in problems:
            template, level, answer = _solve(p["problem"], solvers)
            assert level == p["level"], p
            assert str(answer) == p["answer"], p
            used[template] += 1
        never = set(range(len(solvers))) - set(used)
        assert not never, f"{split}: templates never used: {never}"
    assert len(SOLVERS) >= 8 and len(UNSEEN_SOLVERS) == 2 * len(LEVELS)


def test_names_and_pronouns_vary(big: dict[str, list[dict]]) -> None:
    names = {m.group() for p in big["train"] for m in re.finditer(r"\b[A-Z][a-z]+\b", p["problem"])}
    names -= {"How", "She", "He", "They", "At", "After", "Each", "Every", "On", "It", "The", "A"}
    assert len(names) >= 20
    for p in big["train"]:  # a text never mixes "she" and "he"
        words = set(re.findall(r"\b\w+\b", p["problem"].lower()))
        assert not ({"she", "her"} & words and {"he", "his"} & words), p["problem"]


# Printed with seed 0 / 7 and checked by hand (arithmetic in the comment of each case).
GOLDEN = [
    # 60 - 29 = 31
    ("train", 0, 0, "Priya had 60 cherries and gave 29 of them to Tomas. "
     "How many cherries does Priya have left?", "31"),
    # (26 - 2) / 6 = 4
    ("train", 0, 1, "Ava bakes 26 cookies and eats 2 of them. She shares the rest equally among 6 friends. "
     "How many cookies does each friend get?", "4"),
    # 6 * 36 - 54 + 15 = 216 - 54 + 15 = 177
    ("train", 0, 2, "A library has 6 shelves with 36 books on each shelf. 54 books are borrowed and 15 new books "
     "are added to the shelves. How many books are on the shelves now?", "177"),
    # 200 - (6 * 12 + 7 * 5) = 200 - 107 = 93
    ("train", 0, 3, "Ravi buys 6 candles for $12 each and 7 markers for $5 each. He pays with a $200 bill. "
     "How many dollars of change does he get?", "93"),
    # (2 * 40 + 5 * 90) / 10 * 3 = 530 / 10 * 3 = 159
    ("train", 0, 4, "A truck drives for 2 hours at 40 km per hour and then for 5 hours at 90 km per hour. It uses "
     "one liter of fuel for every 10 kilometers, and fuel costs $3 per liter. How many dollars does the fuel cost?",
     "159"),
    # 27 + 5 = 32
    ("test", 7, 0, "Zara has 27 stickers and buys 5 more. How many stickers does she have now?", "32"),
    # (3 * 10 - 7 - 8) / 5 = 15 / 5 = 3
    ("test", 7, 3, "Ravi bakes 3 trays of 10 muffins each. He sells 7 muffins and gives 8 to his teachers. He packs "
     "the rest into boxes of 5. How many boxes does he fill?", "3"),
    # (5 * 11 + 8 * 3 - 10) / 3 = (55 + 24 - 10) / 3 = 69 / 3 = 23
    ("test", 7, 4, "A group of 3 friends buys 5 pizzas for $11 each and 8 drinks for $3 each. "
     "They use a coupon for $10 off and split the bill equally. How many dollars does each friend pay?", "23"),
]  # fmt: skip


@pytest.mark.parametrize(("split", "seed", "index", "problem", "answer"), GOLDEN)
def test_hand_verified_examples(split: str, seed: int, index: int, problem: str, answer: str) -> None:
    p = builtin_problems(split, 5, seed=seed)[index]
    assert (p["problem"], p["answer"]) == (problem, answer)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"split": "dev", "n": 3}, "'dev'"),
        ({"split": "train", "n": -1}, "-1"),
        ({"split": "train", "n": 3, "levels": ()}, "()"),
        ({"split": "train", "n": 3, "levels": (0,)}, "0"),
        ({"split": "train", "n": 3, "levels": (1, 6)}, "6"),
        ({"split": "train", "n": 3, "levels": ("2",)}, "'2'"),
    ],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(DistillError) as err:
        builtin_problems(**kwargs)
    message = str(err.value)
    assert needle in message
    allowed = "train" if kwargs["split"] == "dev" else ("non-negative" if kwargs["n"] < 0 else "(1, 2, 3, 4, 5)")
    assert allowed in message
