"""The keyword screen at R1 scale (distill.curation.safety.screen: Aho-Corasick, then the boundary rule at each
candidate) gives exactly what the regex screen it replaced gave. That regex screen is kept here, verbatim, as
the reference: one alternation of look-around patterns per category, walked with re.finditer."""

import functools
import multiprocessing
import random
import re
from concurrent.futures import ProcessPoolExecutor

import pytest

from distill.common.errors import DistillError
from distill.curation.safety import load_keywords, screen

# --------------------------------------------------------------------------------------------------
# The reference: the regex screen as it was


def old_pattern(keyword: str) -> str:
    prefix = keyword.endswith("*")
    words = keyword.rstrip("*").split()
    body = r"\s+".join(re.escape(w).replace(r"\-", r"[-\s]?") for w in words) + (r"\w*" if prefix else "")
    return rf"(?<!\w)({body})(?!\w)"


@functools.lru_cache(maxsize=32)
def old_compiled(frozen):
    out = []
    for category, words in frozen:
        if words:
            out.append((category, re.compile("|".join(old_pattern(w) for w in words), re.IGNORECASE), words))
    return out


@functools.lru_cache(maxsize=32)
def old_any_keyword(frozen):
    words = [w for _, ws in frozen for w in ws]
    return re.compile("|".join(f"(?:{old_pattern(w)})" for w in words) or r"(?!)", re.IGNORECASE)


def old_screen(text, keywords):
    frozen = tuple((c, tuple(ws)) for c, ws in keywords.items())
    if not old_any_keyword(frozen).search(text or ""):
        return []
    hits = []
    for category, pattern, words in old_compiled(frozen):
        seen = set()
        for m in pattern.finditer(text or ""):
            word = words[(m.lastindex or 1) - 1]
            if word not in seen:
                seen.add(word)
                hits.append((category, word))
    return hits


# --------------------------------------------------------------------------------------------------
# Texts

KEYWORDS = load_keywords()
SHIPPED = [(c, w) for c, ws in KEYWORDS.items() for w in ws]
# Characters that re.IGNORECASE matches to an ASCII letter without being its upper or lower case.
EXOTIC = {"s": "\u017f", "k": "\u212a", "i": "\u0131"}  # long s, Kelvin sign, dotless i
DOTTED_I = "\u0130"  # İ: matches i, and its str.lower() is two characters
WHITESPACE = [" ", "  ", "\n", "\t", "\r\n", "\xa0", "\u2003", "\u3000", "\x1c", "\x85"]
LEFT = ["", " ", "(", '"', "'", "-", "/", "\n", "_", "a", "Z", "9"] + [
    "\u00e9",
    "\u00df",
    "\u4e2d",
    "\u0301",
    "\u03c3",
    "\U0001f600",
]
RIGHT = ["", ".", " ", "!", ",", "-", "-ish", "'s", "s", "_", "x", "7", "\u00e9", "\u4e2d", "\u0301", "\u2019s", ")"]


def case_forms(s: str, rng: random.Random) -> list[str]:
    mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in s)
    exotic = "".join(EXOTIC.get(c, c) if rng.random() < 0.7 else c for c in s)
    return [s, s.upper(), s.title(), mixed, exotic, s.replace("i", DOTTED_I)]


def surfaces(keyword: str, rng: random.Random) -> list[str]:
    """The keyword as a text may write it, and near misses: other whitespace, hyphen variants, word endings,
    cases; a hyphen for a space, no space, a double hyphen (no match)."""
    stem = keyword.rstrip("*")
    endings = ["", "s", "ed", "ing", "\u00e9", "_x", "9"] if keyword.endswith("*") else ["", "s"]
    out = [stem + e for e in endings]
    out += [stem.replace(" ", w) for w in WHITESPACE if " " in stem]
    out += [stem.replace("-", h) for h in ["", " ", "\n", "--", "- ", "\u2010", "_"] if "-" in stem]
    if " " in stem:
        out += [stem.replace(" ", "-"), stem.replace(" ", ""), stem.replace(" ", "_"), stem.replace(" ", " - ")]
    out += case_forms(stem, rng)
    return list(dict.fromkeys(out))


def in_context(form: str) -> list[str]:
    """`form` at the start and end of the text and inside a sentence, touching every LEFT and RIGHT character."""
    pairs = [(left, "") for left in LEFT] + [("", right) for right in RIGHT[1:]]
    pairs += [("x", "y"), ("pre", "post"), ("\u00e9", "\u00e9")]  # inside a longer word: never a hit
    texts = [f"{left}{form}{right}" for left, right in pairs]
    return texts + [f"Consider {left}{form}{right} here." for left, right in pairs]


# --------------------------------------------------------------------------------------------------
# (a) every shipped keyword, every boundary case


@pytest.mark.parametrize(("category", "keyword"), SHIPPED, ids=[w for _, w in SHIPPED])
def test_every_keyword_at_every_boundary(category, keyword):
    rng = random.Random(keyword)
    texts = [t for form in surfaces(keyword, rng) for t in in_context(form)]
    hits = 0
    for text in texts:
        expected = old_screen(text, KEYWORDS)
        assert screen(text, KEYWORDS) == expected, text
        hits += (category, keyword) in expected
    # the cases cut both ways: the plain keyword in a sentence is a hit, inside a longer word it is not
    plain = keyword.rstrip("*")
    assert (category, keyword) in screen(f"Consider {plain} here.", KEYWORDS)
    assert (category, keyword) in screen(f"{plain.upper()}", KEYWORDS)
    assert (category, keyword) not in screen(f"x{plain}y", KEYWORDS)
    assert 20 < hits < len(texts) - 20, (hits, len(texts))


def test_unicode_case_and_boundaries():
    """What str.lower() alone would get wrong: re.IGNORECASE matches long s, the Kelvin sign, dotless and
    dotted I (whose lower case is two characters, shifting every later position), and a combining mark or
    a Greek letter beside a keyword is (not) a word character."""
    cases = {
        "\u017farin": [("bio_chem_agents", "sarin")],
        "\u212aEYLOGGER": [("malware", "keylogger")],
        "r\u0131c\u0131n": [("bio_chem_agents", "ricin")],
        f"R{DOTTED_I}C{DOTTED_I}N and then sarin": [("bio_chem_agents", "ricin"), ("bio_chem_agents", "sarin")],
        f"{DOTTED_I * 5} ... a pipe bomb": [("explosives", "pipe bomb")],
        "e\u0301sarin sarin\u0301": [("bio_chem_agents", "sarin")],  # a combining accent is no \w: a boundary
        "\u03c3sarin": [],  # a Greek sigma is a letter
        "sarin\u4e2d": [],
        "\u4e2d\u6587 sarin \u4e2d\u6587": [("bio_chem_agents", "sarin")],
    }
    for text, hits in cases.items():
        assert old_screen(text, KEYWORDS) == hits, text  # the reference agrees with the expectation
        assert screen(text, KEYWORDS) == hits, text


def test_overlapping_keywords_within_a_category():
    """A category's matches do not overlap and, at one place, the earlier keyword of the list wins."""
    cases = {
        "master race war": [("hate", "master race")],
        "race war of the master race": [("hate", "race war"), ("hate", "master race")],
        "weaponized anthrax, weaponizing": [("bio_chem_agents", w) for w in ("weaponized anthrax", "weaponiz*")],
        "weaponizing weaponized anthrax": [("bio_chem_agents", w) for w in ("weaponiz*", "weaponized anthrax")],
        "a pipe bomb, make a bomb": [("explosives", "pipe bomb"), ("explosives", "make a bomb")],
        "selfharm self harm self-harm": [("self_harm", "self-harm")],
    }
    for text, hits in cases.items():
        assert old_screen(text, KEYWORDS) == hits, text
        assert screen(text, KEYWORDS) == hits, text


# --------------------------------------------------------------------------------------------------
# (b) random texts from keywords and near misses

NEAR_MISSES = (
    "skill killer itself yourself myself selfish trace bracket scar card carry cart pipeline pipes automatic "
    "autos reverse reversed shells master mastery nail nailed bombastic bombed sarina tabunda rice ricing "
    "pricing execute cute cut cutting child children ethnic race races racer lethal lethality dose enhance "
    "credential credentials botnets keyloggers ransom ware gas gasoline agent agents nerve nerves 3d 3-d printed "
    "full fully auto sear bump stock homemade silencer serial number culture ransomware-as-a-service"
).split()
SEPARATORS = [" ", " ", " ", "  ", "\n", "-", "--", "", ".", ", ", "_", "'", "(", ") "] + [
    "\xa0",
    "\t",
    "\u00e9",
    "\U0001f600",
]


def random_text(rng: random.Random, vocabulary: list[str]) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        word = rng.choice(vocabulary)
        if rng.random() < 0.3:
            word = rng.choice(case_forms(word, rng))
        parts += [word, rng.choice(SEPARATORS)]
    return "".join(parts[: rng.choice([-1, len(parts)])])


def vocabulary_of(keywords: dict[str, list[str]]) -> list[str]:
    words = [w.rstrip("*") for ws in keywords.values() for w in ws]
    pieces = [p for w in words for p in re.split(r"[\s-]+", w) if p]
    return words + pieces + NEAR_MISSES


def test_random_texts_of_keywords_and_near_misses():
    rng = random.Random(0)
    vocabulary = vocabulary_of(KEYWORDS)
    flagged = several = 0
    for _ in range(4000):
        text = random_text(rng, vocabulary)
        expected = old_screen(text, KEYWORDS)
        assert screen(text, KEYWORDS) == expected, text
        flagged += bool(expected)
        several += len(expected) > 2
    assert 1000 < flagged < 3800 and several > 100, (flagged, several)


def test_custom_lists_with_odd_keywords():
    """Keyword lists the shipped one does not exercise: leading, trailing and double hyphens, punctuation, a
    keyword in two categories, duplicates in other cases (a dict built by hand), non-ASCII letters."""
    keywords = {
        "odd": ["-foo", "- bar", "baz-", "a--b", "c++", "...", "x.y", "q*", "kill", "KILL", "ab cd*", "e-f-g"],
        "letters": ["stra\u00dfe", "\u03c3\u03af\u03b3\u03bc\u03b1", "\u0130stanbul", "na\u00efve", "\u00e9t\u00e9"],
        "again": ["kill", "foo"],
        "empty": [],
    }
    vocabulary = vocabulary_of(keywords) + ["STRASSE", "STRA\u1e9eE", "\u03a3\u038a\u0393\u039c\u0391", "NA\u00cfVE"]
    rng = random.Random(1)
    flagged = 0
    for _ in range(4000):
        text = random_text(rng, vocabulary)
        expected = old_screen(text, keywords)
        assert screen(text, keywords) == expected, text
        flagged += bool(expected)
    assert 1000 < flagged < 3900, flagged
    only_scanned = {"c": ["-foo", "- bar"]}  # no keyword for the automaton at all
    for text in ["-foo", "a -foo", "x-foo", "foo", "\n  bar", "- bar", "x - bar"]:
        assert screen(text, only_scanned) == old_screen(text, only_scanned), text
    assert screen("sarin", {}) == old_screen("sarin", {}) == []


def test_a_list_without_the_letter_i():
    """İ lower-cases to two characters; with no i in the list it is no keyword letter, and the positions
    after it still line up."""
    keywords = {"c": ["bomb", "nerve agent*"]}
    for text in [f"{DOTTED_I} bomb", f"{DOTTED_I * 3}\nNERVE  AGENTS and a bomb", f"x{DOTTED_I} bomb {DOTTED_I}"]:
        expected = old_screen(text, keywords)
        assert expected and screen(text, keywords) == expected, text


def test_a_keyword_that_would_match_empty_text_is_refused():
    """The one difference from the regex screen, on lists load_keywords refuses anyway ("has no letters or
    digits"): the regex flagged every text, even "", for a keyword such as "*" or "-"."""
    for bad in ["*", "-", "--*", ""]:
        assert old_screen("", {"c": [bad]}) == [("c", bad)]
        with pytest.raises(DistillError, match="would match empty text"):
            screen("anything", {"c": ["sarin", bad]})


# --------------------------------------------------------------------------------------------------
# (c) R1-length texts

REASONING = [
    "Let me think about this step by step.",
    "Wait, I should double-check the previous computation, since the sign matters here.",
    "So the derivative is $f'(x) = 3x^2 - 2x + 1$, which has no real roots because the discriminant is negative.",
    "Hmm, that doesn't look right. Let me reconsider the trace of the matrix itself.",
    "Alternatively, we can use the pipeline from before and execute each step on the card deck.",
    "The bracket sequence $((()))$ is balanced, so the count is $\\binom{6}{3}/4 = 5$.",
    "In Python: `for i in range(n): total += a[i] * b[i]` runs in $O(n)$ time.",
    "Therefore the answer is $\\boxed{42}$.",
    "But wait, maybe I made a mistake: the skill of the player and the cut of the cake are independent.",
    "\u2211_{k=1}^{n} k = n(n+1)/2, so \u03b1 + \u03b2 = 7 and the caf\u00e9 problem gives 12 \u00d7 3.",
    "Let me re-express this: the probability is 1/6 for each face, and the expectation is 3.5.",
    "\u4e2d\u6587\u7684\u89e3\u91ca\uff1a\u8fd9\u4e2a\u6570\u5b57\u662f\u8d28\u6570\u3002",
]


def r1_text(rng: random.Random, size: int = 20_000) -> str:
    vocabulary = vocabulary_of(KEYWORDS)
    parts: list[str] = []
    n = 0
    while n < size:
        piece = rng.choice(REASONING)
        if rng.random() < 0.02:
            piece = rng.choice(surfaces(rng.choice(SHIPPED)[1], rng)) + rng.choice(RIGHT)
        elif rng.random() < 0.05:
            piece = random_text(rng, vocabulary)
        parts.append(piece)
        n += len(piece) + 1
    return " ".join(parts)


def test_r1_length_texts():
    rng = random.Random(2)
    flagged = 0
    for i in range(16):
        text = r1_text(rng)
        if i % 4 == 0:
            text = text.replace("the", "th\u0130")  # the positions of everything after shift in str.lower()
        expected = old_screen(text, KEYWORDS)
        assert screen(text, KEYWORDS) == expected
        flagged += bool(expected)
    text = " ".join(rng.choice(REASONING[:9]) for _ in range(600))  # ASCII, R1-length, clean
    assert len(text) > 20_000 and old_screen(text, KEYWORDS) == screen(text, KEYWORDS) == []
    assert flagged >= 12


# --------------------------------------------------------------------------------------------------
# Worker processes


def test_screen_in_a_fresh_worker_process():
    """The filter screens in worker processes: a spawned one builds its own automaton from the plain dict."""
    texts = ["a pipe bomb", "the skill of a keylogger", "nothing here"]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        got = list(pool.map(screen, texts, [KEYWORDS] * len(texts)))
    assert got == [[("explosives", "pipe bomb")], [("malware", "keylogger")], []]
