"""Where verify_math finds the answer in a trace, on traces written the way R1-style teachers write them:
several boxes as one set, the last box over an earlier one, answers without a box (and require_boxed
refusing them), unclosed <think> blocks, boxes inside <think> that the final part overrides, and the
normalisations inside boxes. Every test checks both the verdict and its reason."""

from __future__ import annotations

import pytest
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from distill.verification.answers import verify_many, verify_math

THINK = (
    "<think>\nOkay, let me set up the equations first.\n"
    "Substituting back, both conditions hold, so I am fairly confident.\n</think>\n\n"
)


def trace(final: str, think: str = THINK) -> str:
    return think + final


def check(gold: str, completion: str, correct: bool, reason: str, require_boxed: bool = False) -> None:
    v = verify_math(gold, completion, require_boxed=require_boxed)
    assert (v.correct, v.reason) == (correct, reason), v


# --------------------------------------------------------------------------------------------------
# Several boxes, and which box counts


SOLUTIONS = r"So the integer solutions are $\boxed{(2,2)}$ and $\boxed{(6,2)}$."


@pytest.mark.parametrize("require_boxed", [False, True])
def test_several_boxes_are_one_set_answer(require_boxed):
    check("(2,2),(6,2)", trace(SOLUTIONS), True, "correct", require_boxed)
    check("(6,2),(2,2)", trace(SOLUTIONS), True, "correct", require_boxed)  # a set: order does not matter
    check(r"\boxed{(2,2)}, \boxed{(6,2)}", trace(SOLUTIONS), True, "correct", require_boxed)  # a boxed gold too


def test_one_box_of_a_two_element_set_is_wrong():
    check("(2,2),(6,2)", trace(r"The only solution is $\boxed{(2,2)}$."), False, "wrong_answer")
    check("(2,2)", trace(SOLUTIONS), False, "wrong_answer")


def test_last_box_wins_over_an_earlier_different_one():
    final = (
        r"Adding the columns gives $\boxed{5}$. Wait, that ignores the carry from the tens column. "
        "Redoing the sum with the carry:\n\n**Final Answer**\n\\[\n\\boxed{7}\n\\]"
    )
    check("7", trace(final), True, "correct", require_boxed=True)
    check("5", trace(final), False, "wrong_answer", require_boxed=True)


@pytest.mark.parametrize(
    "final",
    [
        r"First I got $\boxed{41}$, but correcting the sign: $\boxed{42}$.",
        r"First I got \(\boxed{41}\), but correcting the sign: \(\boxed{42}\).",
        "First I got \\boxed{41}. But correcting the sign:\n\n**Final Answer**\n\\boxed{42}",
    ],
)
def test_last_box_wins_when_boxes_stand_apart(final):
    check("42", trace(final), True, "correct", require_boxed=True)
    check("41", trace(final), False, "wrong_answer", require_boxed=True)


@pytest.mark.parametrize(
    ("final", "read_as"),
    [
        (r"First I got \boxed{41}, but correcting the sign: \boxed{42}.", "41, 42"),
        (r"The answer is \boxed{42}. (Not \boxed{41}.)", "41, 42"),
    ],
)
def test_bare_boxes_in_one_sentence_are_read_as_one_set_like_math_verify(final, read_as):
    # math-verify 0.9 (and with it open-r1's and TRL's rewards) reads bare \boxed{} in one run of text as
    # one set, so here the last box does not win: the gold 42 is a wrong answer, the set {41, 42} correct.
    check("42", trace(final), False, "wrong_answer", require_boxed=True)
    check(read_as, trace(final), True, "correct", require_boxed=True)
    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    assert not verify(parse("$42$", config), parse(final, config))


def test_box_wins_over_a_later_plain_answer_line():
    # math-verify ranks a box above an "answer is" phrase, wherever they stand
    final = r"Therefore $\boxed{3}$. (Checking once more, the answer is 4 only if we count the endpoint.)"
    check("3", trace(final), True, "correct")


# --------------------------------------------------------------------------------------------------
# Answers without a box: found for eval, refused under require_boxed (the filter's default)


UNBOXED = [
    ("f(y)=y", "Plugging $x = 0$ into the equation forces the identity, so\n$$f(y) = y$$"),
    ("14", "The answer is 14."),
    ("1000", r"In total the farm sells $1\,000$ apples."),
]


@pytest.mark.parametrize(("gold", "final"), UNBOXED)
def test_unboxed_answer_is_found(gold, final):
    check(gold, trace(final), True, "correct")


@pytest.mark.parametrize(("gold", "final"), UNBOXED)
def test_unboxed_answer_is_no_answer_when_a_box_is_required(gold, final):
    check(gold, trace(final), False, "no_answer", require_boxed=True)


def test_unboxed_wrong_answer_is_wrong():
    check("14", trace("The answer is 15."), False, "wrong_answer")
    check("f(y)=y", trace("So $$f(y) = 2y$$"), False, "wrong_answer")


def test_unboxed_answer_without_think_block():
    check("14", "We count the cases one by one. The answer is 14.", True, "correct")


def test_no_answer_anywhere():
    check("42", trace("I could not finish the computation in time."), False, "no_answer")
    check("42", trace(r"The answer is $\boxed{}$."), False, "no_answer", require_boxed=True)


# --------------------------------------------------------------------------------------------------
# <think> blocks


@pytest.mark.parametrize("require_boxed", [False, True])
def test_box_inside_unclosed_think_is_truncated(require_boxed):
    cut = "<think>\nThe sum telescopes, so the value is $\\boxed{3}$. Let me double-check the first term"
    check("3", cut, False, "truncated", require_boxed)
    # closed once, opened again and never closed: also cut off
    again = "<think>a</think>\nSo $\\boxed{3}$.\n<think>\nHmm, wait"
    check("3", again, False, "truncated", require_boxed)


def test_finish_reason_length_is_truncated():
    v = verify_math("3", trace(r"So $\boxed{3}$."), finish_reason="length")
    assert (v.correct, v.reason) == (False, "truncated"), v


@pytest.mark.parametrize("require_boxed", [False, True])
def test_final_box_wins_over_a_box_inside_think(require_boxed):
    think = "<think>\nA first guess: $\\boxed{4}$. No, 4 double-counts the corner square.\n</think>\n\n"
    final = r"Counting each square once, there are $\boxed{3}$ squares."
    check("3", trace(final, think), True, "correct", require_boxed)
    check("4", trace(final, think), False, "wrong_answer", require_boxed)


def test_box_only_inside_think_does_not_count():
    think = "<think>\nSo it is $\\boxed{4}$.\n</think>\n\n"
    check("4", trace("The answer is 3.", think), False, "wrong_answer")
    check("4", trace("The answer is 3.", think), False, "no_answer", require_boxed=True)


def test_completion_with_only_the_closing_tag():
    # chat templates that put <think> in the prompt: the completion starts inside the reasoning
    check("12", r"so maybe $\boxed{10}$... no.</think>The answer is $\boxed{12}$.", True, "correct", True)


# --------------------------------------------------------------------------------------------------
# Normalisations inside boxes (math-verify 0.9 alone gets these wrong)


@pytest.mark.parametrize(
    ("gold", "box"),
    [
        ("1000", r"1\,000"),  # math-verify alone reads 1*0
        ("1234", r"1\,234"),  # math-verify alone reads 235
        ("2500000", r"2\,500\,000"),
        ("18", r"\text{18 dollars}"),  # math-verify alone keeps a symbol "18dollars"
        (r"\text{18 dollars}", "18"),
        ("3", "3."),
    ],
)
@pytest.mark.parametrize("require_boxed", [False, True])
def test_normalisations_inside_boxes(gold, box, require_boxed):
    final = f"Putting it together, the total is $\\boxed{{{box}}}$."
    check(gold, trace(final), True, "correct", require_boxed)


def test_normalised_box_still_catches_a_wrong_value():
    check("1000", trace(r"So $\boxed{1\,001}$."), False, "wrong_answer", require_boxed=True)
    check("18", trace(r"He pays $\boxed{\text{19 dollars}}$."), False, "wrong_answer", require_boxed=True)


# --------------------------------------------------------------------------------------------------
# Golds as datasets write them


@pytest.mark.parametrize(
    "gold",
    ["9", "$9$", r"\(9\)", r"\boxed{9}", r"Adding up, $4 + 5 = 9$, so the answer is $\boxed{9}$."],
)
def test_gold_forms(gold):
    check(gold, trace(r"So $\boxed{9}$."), True, "correct", require_boxed=True)
    check(gold, trace(r"So $\boxed{8}$."), False, "wrong_answer", require_boxed=True)


# --------------------------------------------------------------------------------------------------
# verify_many passes require_boxed through the worker processes


def test_verify_many_require_boxed_in_workers():
    items = [
        ("(2,2),(6,2)", trace(SOLUTIONS), None),
        ("14", trace("The answer is 14."), None),
        ("f(y)=y", trace("Hence\n$$f(y) = y$$"), None),
        ("3", "<think>\nit is $\\boxed{3}$", None),
        ("7", trace(r"First $\boxed{5}$, then with the carry $\boxed{7}$."), None),
        ("18", trace(r"$\boxed{\text{18 dollars}}$"), None),
    ]
    strict = verify_many(items, timeout=30.0, workers=2, require_boxed=True)
    assert [(v.correct, v.reason) for v in strict] == [
        (True, "correct"),
        (False, "no_answer"),
        (False, "no_answer"),
        (False, "truncated"),
        (True, "correct"),
        (True, "correct"),
    ], strict
    lenient = verify_many(items, timeout=30.0, workers=2, require_boxed=False)
    assert [(v.correct, v.reason) for v in lenient] == [
        (True, "correct"),
        (True, "correct"),
        (True, "correct"),
        (False, "truncated"),
        (True, "correct"),
        (True, "correct"),
    ], lenient
