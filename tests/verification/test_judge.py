"""LLM judge (distill.verification.judge) against a real local HTTP server."""

import pytest

from distill.common.errors import DistillError
from distill.verification.judge import JUDGE_PROMPT, judge_many, parse_verdict
from tests.fakes import RuleServer


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("VERDICT: CORRECT", True),
        ("VERDICT: INCORRECT", False),
        ("  \nVERDICT: CORRECT\n\n", True),
        ("verdict: correct", True),
        ("Verdict:incorrect.", False),
        ("<think>The reference is 5 and so is the answer.</think>\nVERDICT: CORRECT", True),
        ("VERDICT: CORRECT\nThe answer matches the reference.", None),
        ("The answer matches.\nVERDICT: CORRECT", None),
        ("VERDICT: CORRECT\nVERDICT: INCORRECT", None),
        ("VERDICT: CORRECT or INCORRECT", None),
        ("VERDICT: PARTIALLY CORRECT", None),
        ("VERDICT: probably correct", None),
        ("The verdict: correct", None),
        ("CORRECT", None),
        ("**VERDICT: CORRECT**", None),
        ("<think>still thinking about VERDICT: CORRECT", None),
        ("", None),
    ],
)
def test_parse_verdict_is_strict(reply, expected):
    assert parse_verdict(reply) is expected


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def judge_rule(user: str) -> str | tuple[int, str]:
    """CORRECT when the candidate's final answer equals the reference shown in the prompt; garbage for a
    GARBAGE marker, a hedge for HEDGE, HTTP 400 for BADREQUEST."""
    reference = _between(user, "Reference answer:\n", "\n\nCandidate's final answer:")
    answer = _between(user, "Candidate's final answer:\n", "\n\nDecide whether")
    if "BADREQUEST" in answer:
        return 400, "bad request"
    if "GARBAGE" in answer:
        return "<<<%%% not a verdict %%%>>>"
    if "HEDGE" in answer:
        return "VERDICT: CORRECT\nVERDICT: INCORRECT"
    if "<think>" in answer or "reasoning" in answer:
        return (400, "the judge was shown reasoning")  # only the final part may reach the judge
    return "VERDICT: CORRECT" if answer == reference else "<think>Compare.</think>\nVERDICT: INCORRECT"


def test_judge_many_against_a_local_server():
    items = [
        ("What is the capital of France?", "Paris", "Paris"),
        ("Name the gas plants absorb.", "carbon dioxide", "<think>some reasoning here</think>\n\ncarbon dioxide"),
        ("What is 2+2?", "4", "<think>reasoning</think>5"),
        ("Q?", "x", "GARBAGE"),
        ("Q?", "x", "HEDGE"),
        ("Q?", "x", "BADREQUEST"),
        ("Q?", "x", "<think>never closed reasoning"),
        ("Q?", "x", "<think>reasoning</think>   "),
        ("Braces {like} \\frac{1}{2}?", "\\frac{1}{2}", "\\frac{1}{2}"),
    ]
    with RuleServer(judge_rule) as server:
        verdicts = judge_many(items, [server.url], concurrency=4, retries=0)
        bodies = server.bodies
    assert [(v.correct, v.reason) for v in verdicts] == [
        (True, "correct"),
        (True, "correct"),
        (False, "judge: incorrect"),
        (False, "judge: undecidable"),
        (False, "judge: undecidable"),
        (False, verdicts[5].reason),
        (False, "truncated"),
        (False, "no_answer"),
        (True, "correct"),
    ]
    assert verdicts[5].reason.startswith("judge: error: HTTP 400")
    assert verdicts[1].extracted == "carbon dioxide" and verdicts[2].extracted == "5"
    assert len(bodies) == 7  # no request for the truncated and the empty answer
    assert all(b["temperature"] == 0 and b["max_tokens"] == 256 and b["model"] == "judge" for b in bodies)


def test_judge_prompt_asks_for_one_verdict_line():
    text = JUDGE_PROMPT.format(problem="P", reference="R", answer="A")
    assert "VERDICT: CORRECT" in text and "VERDICT: INCORRECT" in text and "exactly one line" in text


def test_judge_many_needs_a_live_server():
    with pytest.raises(DistillError, match="no OpenAI-compatible server answers"):
        judge_many([("q", "a", "a")], ["http://127.0.0.1:9/v1"])
    assert judge_many([], ["http://127.0.0.1:9/v1"]) == []  # nothing to judge: no server needed
