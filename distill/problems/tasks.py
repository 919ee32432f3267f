"""Procedurally generated math word problems with exact integer answers.

Each level has a table of story templates; a template is a small function that draws numbers from a
`random.Random`, writes the story with them and computes the answer from the same numbers. The level is
the number of arithmetic operations needed (level 1: one operation, level 5: five), and every
intermediate result is a whole number (division only where it is exact).

Determinism: problem k of a level gets its own generator, seeded from a SHA-256 digest of
(seed, split, level, k, attempt) -- never Python's salted `hash()` -- so output is identical in any process.
Train/test disjointness holds by construction: the first integer in a train problem's text is always
even, in a test problem's text always odd (a draw that breaks this is redrawn with the next attempt),
so no problem text can occur in both splits. A text that repeats within one call is redrawn the same way.
The "unseen" split draws from its own templates (other stories, the same levels), none of which train or test
uses: it measures whether a student's reasoning transfers beyond the stories it was trained on.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence

from distill.common.errors import DistillError

LEVELS = (1, 2, 3, 4, 5)
SPLITS = ("train", "test", "unseen")

_SPLIT_PARITY = {"train": 0, "test": 1, "unseen": 1}  # parity of the first integer in the problem text
_MAX_ATTEMPTS = 1000
_FIRST_INT = re.compile(r"\d+")

_NAMES = (
    ("Mia", "she"), ("Liam", "he"), ("Ava", "she"), ("Noah", "he"), ("Sofia", "she"), ("Ethan", "he"),
    ("Zara", "she"), ("Omar", "he"), ("Priya", "she"), ("Lucas", "he"), ("Hana", "she"), ("Mateo", "he"),
    ("Chloe", "she"), ("Kenji", "he"), ("Amara", "she"), ("Diego", "he"), ("Elena", "she"), ("Samuel", "he"),
    ("Fatima", "she"), ("Leo", "he"), ("Grace", "she"), ("Ravi", "he"), ("Nora", "she"), ("Tomas", "he"),
)  # fmt: skip
_ITEMS = tuple("apples marbles stickers pencils cupcakes peaches cherries seashells buttons".split())
_GOODS = ("notebooks", "comic books", "toy cars", "posters", "candles", "mugs", "plants", "markers")
_ANIMALS = (("cows", 4), ("goats", 4), ("sheep", 4), ("pigs", 4), ("horses", 4), ("ducks", 2), ("geese", 2))
_THINGS = ("backpack", "water bottle", "board game", "kite", "lunch box", "scarf", "puzzle", "jacket")


class _Person:
    """A name with matching pronouns: `p.she` is she/he, `p.her` is her/his, `p.She` is capitalized."""

    def __init__(self, rng: random.Random, avoid: str = "") -> None:
        self.name, self.she = rng.choice([n for n in _NAMES if n[0] != avoid])
        self.her = "her" if self.she == "she" else "his"
        self.She = self.she.capitalize()


# One function per story template: draw numbers, write the story, compute the answer from the same numbers.
# ---- level 1: one operation ------------------------------------------------------------------------
def _l1_buy(r: random.Random) -> tuple[str, int]:
    p, it = _Person(r), r.choice(_ITEMS)
    a, b = r.randint(3, 60), r.randint(2, 40)
    return f"{p.name} has {a} {it} and buys {b} more. How many {it} does {p.she} have now?", a + b


def _l1_give(r: random.Random) -> tuple[str, int]:
    p, it = _Person(r), r.choice(_ITEMS)
    friend = _Person(r, avoid=p.name).name
    a = r.randint(12, 90)
    b = r.randint(2, a - 3)
    text = f"{p.name} had {a} {it} and gave {b} of them to {friend}. How many {it} does {p.name} have left?"
    return text, a - b


def _l1_tickets(r: random.Random) -> tuple[str, int]:
    p, event = _Person(r), r.choice(("concert", "museum", "circus", "planetarium", "water park"))
    price, k = r.randint(3, 25), r.randint(2, 8)
    text = f"A {event} ticket costs ${price}. {p.name} buys {k} tickets. How many dollars does {p.she} pay?"
    return text, price * k


def _l1_share(r: random.Random) -> tuple[str, int]:
    p, it = _Person(r), r.choice(_ITEMS)
    k, q = r.randint(2, 9), r.randint(2, 12)
    text = f"{p.name} shares {it} equally among {k} friends. {p.She} has {k * q} {it}. How many does each friend get?"
    return text, q


def _l1_ride(r: random.Random) -> tuple[str, int]:
    p, speed, hours = _Person(r), r.randint(8, 25), r.randint(2, 6)
    text = f"{p.name} cycles at {speed} km per hour for {hours} hours. How many kilometers does {p.she} ride?"
    return text, speed * hours


# ---- level 2: two operations -----------------------------------------------------------------------
def _l2_shop(r: random.Random) -> tuple[str, int]:
    p, it, thing = _Person(r), r.choice(_GOODS), r.choice(_THINGS)
    a, price, cost = r.randint(2, 6), r.randint(2, 12), r.randint(3, 30)
    text = (
        f"{p.name} buys {a} {it} for ${price} each and a {thing} for ${cost}. "
        f"How many dollars does {p.she} spend in total?"
    )
    return text, a * price + cost


def _l2_save(r: random.Random) -> tuple[str, int]:
    p, have, weekly, weeks = _Person(r), r.randint(5, 50), r.randint(2, 12), r.randint(2, 8)
    text = (
        f"{p.name} has ${have} in a piggy bank and saves ${weekly} every week. "
        f"How many dollars will {p.she} have after {weeks} weeks?"
    )
    return text, have + weekly * weeks


def _l2_animals(r: random.Random) -> tuple[str, int]:
    (animal, legs), a, b = r.choice(_ANIMALS), r.randint(3, 20), r.randint(2, 15)
    text = f"A farmer has {a} {animal} and buys {b} more. How many legs do all the {animal} have together?"
    return text, (a + b) * legs


def _l2_class(r: random.Random) -> tuple[str, int]:
    rows, desks = r.randint(3, 8), r.randint(4, 8)
    empty = r.randint(2, rows * desks - 5)
    text = (
        f"A classroom has {rows} rows with {desks} desks in each row. {empty} desks are empty. "
        "How many desks have a student sitting at them?"
    )
    return text, rows * desks - empty


def _l2_cookies(r: random.Random) -> tuple[str, int]:
    p, k, each, eaten = _Person(r), r.randint(2, 6), r.randint(2, 15), r.randint(2, 6)
    text = (
        f"{p.name} bakes {k * each + eaten} cookies and eats {eaten} of them. {p.She} shares the rest "
        f"equally among {k} friends. How many cookies does each friend get?"
    )
    return text, each


# ---- level 3: three operations ---------------------------------------------------------------------
def _l3_change(r: random.Random) -> tuple[str, int]:
    p, it, thing = _Person(r), r.choice(_GOODS), r.choice(_THINGS)
    a, price, cost = r.randint(2, 9), r.randint(3, 15), r.randint(5, 40)
    total = a * price + cost
    bill = next(b for b in (50, 100, 200) if b > total)
    text = (
        f"{p.name} buys {a} {it} for ${price} each and a {thing} for ${cost}. {p.She} pays with a ${bill} "
        f"bill. How many dollars of change does {p.she} get?"
    )
    return text, bill - total


def _l3_drive(r: random.Random) -> tuple[str, int]:
    s1, s2 = r.randint(8, 18) * 5, r.randint(8, 18) * 5
    h1, h2 = r.randint(2, 5), r.randint(2, 5)
    text = (
        f"A car drives at {s1} km per hour for {h1} hours and then at {s2} km per hour for {h2} hours. "
        "How many kilometers does it drive in total?"
    )
    return text, s1 * h1 + s2 * h2


def _l3_recipe(r: random.Random) -> tuple[str, int]:
    p, batch, flour, mult = _Person(r), r.randint(4, 12), r.randint(5, 25) * 10, r.randint(2, 5)
    have = r.randint(2, mult * flour // 10 - 1) * 10
    text = (
        f"A recipe for {batch} pancakes uses {flour} grams of flour. {p.name} wants to make {batch * mult} "
        f"pancakes and already has {have} grams of flour. How many more grams of flour does {p.she} need?"
    )
    return text, mult * flour - have


def _l3_zoo(r: random.Random) -> tuple[str, int]:
    adult, child = r.randint(10, 30), r.randint(4, 9)
    x, y = r.randint(2, 4), r.randint(2, 5)
    text = (
        f"At the zoo, adult tickets cost ${adult} and child tickets cost ${child}. A family buys {x} adult "
        f"tickets and {y} child tickets. How many dollars do they pay?"
    )
    return text, adult * x + child * y


def _l3_library(r: random.Random) -> tuple[str, int]:
    shelves, per = r.randint(4, 15), r.randint(10, 40)
    lent, new = r.randint(5, shelves * per // 2), r.randint(3, 30)
    text = (
        f"A library has {shelves} shelves with {per} books on each shelf. {lent} books are borrowed and "
        f"{new} new books are added to the shelves. How many books are on the shelves now?"
    )
    return text, shelves * per - lent + new


# ---- level 4: four operations ----------------------------------------------------------------------
def _l4_allowance(r: random.Random) -> tuple[str, int]:
    p, thing = _Person(r), r.choice(_THINGS)
    have, earn, weeks = r.randint(10, 60), r.randint(8, 20), r.randint(3, 10)
    spend = r.randint(2, earn - 3)
    total = have + (earn - spend) * weeks
    price = r.randint(5, total - 5)
    text = (
        f"{p.name} has ${have}. Every week {p.she} earns ${earn} for chores and spends ${spend} on snacks. "
        f"After {weeks} weeks, {p.she} buys a {thing} for ${price}. How many dollars does {p.she} have left?"
    )
    return text, total - price


def _l4_farm(r: random.Random) -> tuple[str, int]:
    hens, cows = r.randint(5, 40), r.randint(6, 25)
    sold = r.randint(2, cows - 3)
    text = (
        f"A farmer has {hens} chickens and {cows} cows. The farmer sells {sold} of the cows. "
        "How many legs do the remaining animals have in total?"
    )
    return text, hens * 2 + (cows - sold) * 4


def _l4_bus(r: random.Random) -> tuple[str, int]:
    start = r.randint(15, 45)
    off1, on1 = r.randint(2, start - 5), r.randint(2, 20)
    off2, fare = r.randint(2, start - off1 + on1 - 3), r.randint(2, 5)
    text = (
        f"A bus leaves the station with {start} passengers. At the first stop, {off1} people get off and "
        f"{on1} get on. At the second stop, {off2} people get off. Each passenger still on the bus pays "
        f"${fare} at the last stop. How many dollars are collected at the last stop?"
    )
    return text, (start - off1 + on1 - off2) * fare


def _l4_muffins(r: random.Random) -> tuple[str, int]:
    p, friend = _Person(r), r.choice(("neighbors", "teachers", "cousins"))
    while True:  # redraw until the leftover muffins fill whole boxes
        trays, per_tray, box = r.randint(2, 6), r.choice((6, 8, 10, 12)), r.randint(4, 8)
        sold, given = r.randint(3, trays * per_tray // 3), r.randint(2, 10)
        rest = trays * per_tray - sold - given
        if rest >= box and rest % box == 0:
            break
    text = (
        f"{p.name} bakes {trays} trays of {per_tray} muffins each. {p.She} sells {sold} muffins "
        f"and gives {given} to {p.her} {friend}. {p.She} packs the rest into boxes of {box}. "
        f"How many boxes does {p.she} fill?"
    )
    return text, rest // box


def _l4_change(r: random.Random) -> tuple[str, int]:
    p, (it1, it2) = _Person(r), r.sample(_GOODS, 2)
    a, pa, b, pb = r.randint(2, 8), r.randint(2, 15), r.randint(2, 8), r.randint(2, 15)
    total = a * pa + b * pb
    bill = next(x for x in (50, 100, 200, 500) if x > total)
    text = (
        f"{p.name} buys {a} {it1} for ${pa} each and {b} {it2} for ${pb} each. {p.She} pays with a "
        f"${bill} bill. How many dollars of change does {p.she} get?"
    )
    return text, bill - total


# ---- level 5: five operations ----------------------------------------------------------------------
def _l5_pizza(r: random.Random) -> tuple[str, int]:
    k, pizzas, pp = r.randint(3, 6), r.randint(2, 5), r.randint(9, 18)
    drinks, pd = r.randint(3, 8), r.randint(2, 4)
    total = pizzas * pp + drinks * pd
    coupon = total % k + k * r.randint(1, 3)
    text = (
        f"A group of {k} friends buys {pizzas} pizzas for ${pp} each and {drinks} drinks for ${pd} each. They use a "
        f"coupon for ${coupon} off and split the bill equally. How many dollars does each friend pay?"
    )
    return text, (total - coupon) // k


def _l5_fuel(r: random.Random) -> tuple[str, int]:
    s1, s2, h1, h2 = r.randint(4, 9) * 10, r.randint(4, 9) * 10, r.randint(2, 6), r.randint(2, 6)
    km_per_l, price = r.choice((5, 10)), r.randint(2, 4)
    text = (
        f"A truck drives for {h1} hours at {s1} km per hour and then for {h2} hours at {s2} km per hour. "
        f"It uses one liter of fuel for every {km_per_l} kilometers, and fuel costs ${price} per liter. "
        "How many dollars does the fuel cost?"
    )
    return text, (s1 * h1 + s2 * h2) // km_per_l * price


def _l5_trip(r: random.Random) -> tuple[str, int]:
    classes, size, cap = r.randint(3, 8), r.randint(20, 32), r.choice((20, 25, 30, 40))
    buses = max(1, (classes * size - 1) // cap - r.randint(0, 1))  # buses all full, someone absent
    absent = classes * size - buses * cap
    bus_cost, fee = r.randint(8, 30) * 10, r.randint(5, 40) * 10
    text = (
        f"A school has {classes} classes with {size} students in each class. On the day of the museum trip, "
        f"{absent} students are absent. The others ride in buses that hold {cap} students each, and every "
        f"bus is full. Each bus costs ${bus_cost} to rent, and the museum charges a group fee of ${fee}. "
        "How many dollars does the trip cost in total?"
    )
    return text, buses * bus_cost + fee


def _l5_eggs(r: random.Random) -> tuple[str, int]:
    hens, eggs, weeks, price = r.randint(6, 30), r.randint(3, 6), r.randint(2, 4), r.randint(2, 5)
    total = hens * eggs * weeks
    kept = total % 12 + 12 * r.randint(0, 2) or 12
    text = (
        f"A farmer has {hens} hens, and each hen lays {eggs} eggs per week. After {weeks} weeks, the farmer "
        f"keeps {kept} eggs and sells the rest in cartons of 12. Each carton sells for ${price}. "
        "How many dollars does the farmer earn?"
    )
    return text, (total - kept) // 12 * price


def _l5_jars(r: random.Random) -> tuple[str, int]:
    p, saved, wage, hours, weeks = _Person(r), r.randint(10, 80), r.randint(8, 15), r.randint(3, 8), r.randint(2, 5)
    jars = r.randint(2, 4)
    total = saved + wage * hours * weeks
    jacket = total % jars + jars * r.randint(2, min(15, total // jars - 1))
    text = (
        f"{p.name} already has ${saved} saved. {p.She} earns ${wage} per hour and works {hours} hours each "
        f"week. After {weeks} weeks, {p.she} spends ${jacket} on a jacket and splits the rest equally into "
        f"{jars} savings jars. How many dollars go into each jar?"
    )
    return text, (total - jacket) // jars


# ---- the unseen split: templates that never appear in train or test ---------------------------------
# Train and test share their templates (only the numbers differ), so a student can score on test by copying
# the story's solution pattern. These stories, one table per level with the same operation counts, are used
# by the "unseen" split alone: a score there needs the reasoning to transfer to a story it never saw.
def _u1_stamps(r: random.Random) -> tuple[str, int]:
    p, a, b = _Person(r), r.randint(11, 95), r.randint(11, 95)
    text = f"{p.name} keeps {a} stamps in a blue album and {b} stamps in a red album. How many stamps are in both?"
    return text, a + b


def _u1_baskets(r: random.Random) -> tuple[str, int]:
    n, k = r.randint(3, 12), r.randint(4, 15)
    return f"A baker fills {n} baskets with {k} rolls in each basket. How many rolls are in the baskets?", n * k


def _u2_pages(r: random.Random) -> tuple[str, int]:
    p, a, d, b = _Person(r), r.randint(5, 20), r.randint(2, 7), r.randint(3, 40)
    text = (
        f"{p.name} reads {a} pages every day for {d} days and then {b} pages on the last day. "
        f"How many pages does {p.she} read in total?"
    )
    return text, a * d + b


def _u2_ribbon(r: random.Random) -> tuple[str, int]:
    p, k, piece, cut = _Person(r), r.randint(2, 9), r.randint(5, 30), r.randint(3, 50)
    text = (
        f"{p.name} has a ribbon {k * piece + cut} cm long. {p.She} cuts off {cut} cm and divides the rest into "
        f"{k} equal pieces. How many centimeters long is each piece?"
    )
    return text, piece


def _u3_garden(r: random.Random) -> tuple[str, int]:
    p, rows, plants, each = _Person(r), r.randint(2, 8), r.randint(3, 10), r.randint(2, 9)
    given = r.randint(2, rows * plants * each - 2)
    text = (
        f"A garden has {rows} rows of {plants} tomato plants, and each plant gives {each} tomatoes. "
        f"{p.name} gives away {given} tomatoes. How many tomatoes are left?"
    )
    return text, rows * plants * each - given


def _u3_tank(r: random.Random) -> tuple[str, int]:
    water, rate, minutes, missing = r.randint(15, 200), r.randint(3, 20), r.randint(2, 12), r.randint(5, 150)
    cap = water + rate * minutes + missing
    text = (
        f"A tank holds {cap} liters and has {water} liters of water in it. A pump adds {rate} liters every minute "
        f"for {minutes} minutes. How many more liters are needed to fill the tank?"
    )
    return text, missing


def _u4_bake_sale(r: random.Random) -> tuple[str, int]:
    a, pa, b, pb = r.randint(10, 60), r.randint(2, 6), r.randint(10, 60), r.randint(1, 4)
    cost = r.randint(10, a * pa + b * pb - 5)
    text = (
        f"A class sells {a} cupcakes for ${pa} each and {b} cookies for ${pb} each at a bake sale. The "
        f"ingredients cost ${cost}. How many dollars of profit does the class make?"
    )
    return text, a * pa + b * pb - cost


def _u4_train(r: random.Random) -> tuple[str, int]:
    cars, seats = r.randint(3, 10), r.randint(20, 60)
    first = r.randint(10, cars * seats // 2)
    board, leave = r.randint(5, cars * seats // 3), r.randint(2, first - 1)
    text = (
        f"A train has {cars} cars with {seats} seats in each car. At the first station {first} passengers "
        f"sit down. At the second station {board} more passengers board and {leave} get off. Every passenger "
        "has a seat. How many seats are empty now?"
    )
    return text, cars * seats - (first + board - leave)


def _u5_fence(r: random.Random) -> tuple[str, int]:
    p = _Person(r)
    while True:  # redraw until the cans cover the fence exactly and some are still to buy
        panels, width, height = r.randint(4, 20), r.randint(2, 4), r.randint(1, 3)
        cover, have, price = r.choice((2, 3, 4, 5, 6)), r.randint(1, 4), r.randint(5, 15)
        area = panels * width * height
        if area % cover == 0 and area // cover > have:
            break
    text = (
        f"{p.name} paints a fence of {panels} panels, each {width} meters wide and {height} meters tall. One can "
        f"of paint covers {cover} square meters and costs ${price}. {p.She} already has {have} cans. How many "
        f"dollars does {p.she} spend on the cans {p.she} still needs?"
    )
    return text, (area // cover - have) * price


def _u5_orchard(r: random.Random) -> tuple[str, int]:
    trees, apples, bag, price = r.randint(5, 30), r.randint(20, 60), r.choice((5, 6, 8, 10)), r.randint(2, 6)
    total = trees * apples
    bruised = total % bag + bag * r.randint(1, 4)
    stall = r.randint(5, max(6, (total - bruised) // bag * price // 2))
    text = (
        f"An orchard has {trees} trees, and each tree gives {apples} apples. {bruised} apples are bruised and "
        f"thrown away. The rest are packed into bags of {bag}, and each bag sells for ${price}. The market stall "
        f"costs ${stall}. How many dollars does the orchard make after paying for the stall?"
    )
    return text, (total - bruised) // bag * price - stall


_Template = Callable[[random.Random], tuple[str, int]]
_TEMPLATES: dict[int, tuple[_Template, ...]] = {
    1: (_l1_buy, _l1_give, _l1_tickets, _l1_share, _l1_ride),
    2: (_l2_shop, _l2_save, _l2_animals, _l2_class, _l2_cookies),
    3: (_l3_change, _l3_drive, _l3_recipe, _l3_zoo, _l3_library),
    4: (_l4_allowance, _l4_farm, _l4_bus, _l4_muffins, _l4_change),
    5: (_l5_pizza, _l5_fuel, _l5_trip, _l5_eggs, _l5_jars),
}
_UNSEEN_TEMPLATES: dict[int, tuple[_Template, ...]] = {
    1: (_u1_stamps, _u1_baskets),
    2: (_u2_pages, _u2_ribbon),
    3: (_u3_garden, _u3_tank),
    4: (_u4_bake_sale, _u4_train),
    5: (_u5_fence, _u5_orchard),
}


def _rng(seed: int, split: str, level: int, index: int, attempt: int) -> random.Random:
    key = f"distill.tasks|{seed}|{split}|{level}|{index}|{attempt}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def _validate(split: str, n: int, seed: int, levels: Sequence[int]) -> None:
    if split not in SPLITS:
        raise DistillError(f"unknown split {split!r}; allowed splits: {', '.join(SPLITS)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise DistillError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DistillError(f"seed must be an integer, got {seed!r}")
    if isinstance(levels, (str, bytes)) or len(levels) == 0:
        raise DistillError(f"levels must be a non-empty sequence of levels from {LEVELS}, got {levels!r}")
    for level in levels:
        if not isinstance(level, int) or isinstance(level, bool) or level not in LEVELS:
            raise DistillError(f"unknown level {level!r} in levels; allowed levels: {LEVELS}")


def builtin_problems(split: str, n: int, seed: int = 0, levels: Sequence[int] = LEVELS) -> list[dict]:
    """n problems for `split`, spread evenly across `levels` (round-robin).

    Deterministic given (split, n, seed, levels). Raises DistillError for an unknown split or level, n < 0
    or empty levels.
    """
    _validate(split, n, seed, levels)
    levels = tuple(levels)
    parity = _SPLIT_PARITY[split]
    templates = _UNSEEN_TEMPLATES if split == "unseen" else _TEMPLATES
    seen: set[str] = set()
    per_level = dict.fromkeys(levels, 0)
    out: list[dict] = []
    for i in range(n):
        level = levels[i % len(levels)]
        index = per_level[level]
        per_level[level] += 1
        for attempt in range(_MAX_ATTEMPTS):
            rng = _rng(seed, split, level, index, attempt)
            text, answer = rng.choice(templates[level])(rng)
            if int(_FIRST_INT.search(text).group()) % 2 == parity and text not in seen:
                break
        else:  # pragma: no cover - would mean a template cannot produce this split's parity
            raise RuntimeError(f"could not generate a new level-{level} problem for split {split!r}")
        seen.add(text)
        out.append(
            {
                "id": f"builtin-{split}-L{level}-{i:05d}",
                "problem": text,
                "answer": str(answer),
                "domain": "math",
                "level": level,
                "split": split,
            }
        )
    return out
