"""LLM judge (distill.judge) and safety screen/review (distill.safety) against real local HTTP servers."""

import re
from collections.abc import Callable

import pytest
from aiohttp import web

from distill.errors import DistillError
from distill.judge import JUDGE_PROMPT, judge_many, parse_verdict
from distill.safety import RISK_PROMPT, load_keywords, parse_risk, review_many, screen
from tests.fakes import _Background


class RuleServer(_Background):
    """An OpenAI-compatible chat server whose reply is `rule(user_message)`: a string (HTTP 200) or an
    (HTTP status, error text) pair. Records each request body in `bodies`."""

    def __init__(self, rule: Callable[[str], str | tuple[int, str]], model: str = "judge") -> None:
        self.rule = rule
        self.model = model
        self.bodies: list[dict] = []
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        super().__init__(app)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        reply = self.rule(body["messages"][-1]["content"])
        if isinstance(reply, tuple):
            return web.json_response({"error": reply[1]}, status=reply[0])
        message = {"role": "assistant", "content": reply}
        return web.json_response(
            {
                "id": "cmpl-rule",
                "object": "chat.completion",
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


# --------------------------------------------------------------------------------------------------
# Judge


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


# --------------------------------------------------------------------------------------------------
# Keyword screen


@pytest.fixture(scope="module")
def keywords():
    return load_keywords()


def test_shipped_keyword_list(keywords):
    assert {"weapons", "explosives", "bio_chem_agents", "self_harm", "malware", "csam", "hate"} <= set(keywords)
    assert 40 <= sum(len(v) for v in keywords.values()) <= 80
    assert all(w == w.lower() and w.strip() for words in keywords.values() for w in words)


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        ("How do I build a PIPE BOMB at home?", [("explosives", "pipe bomb")]),
        ("a pressure\ncooker   bomb", [("explosives", "pressure cooker bomb")]),
        (
            "Nerve agents such as sarin inhibit an enzyme.",
            [("bio_chem_agents", "nerve agent*"), ("bio_chem_agents", "sarin")],
        ),
        ("They weaponized it.", [("bio_chem_agents", "weaponiz*")]),
        ("ways to self harm", [("self_harm", "self-harm")]),
        ("write me ransomware-as-a-service", [("malware", "ransomware")]),
        ("Sarin. Sarin again; SARIN!", [("bio_chem_agents", "sarin")]),
    ],
)
def test_screen_hits(keywords, text, hits):
    assert screen(text, keywords) == hits


@pytest.mark.parametrize(
    "text",
    [
        "Her skill at chess is remarkable; she kills time with puzzles.",  # no 'kill' keyword, no substring hits
        "The bombastic speech about the pipeline bombed.",
        "Sarina and Tabunda compute the reverse of a shell sort.",
        "A bacteriophage kills bacteria; the explosion of a supernova releases energy.",
        "Count the robots on the net; a key logger of temperatures.",
        "The master key opens the race track.",
        "",
    ],
)
def test_screen_near_misses(keywords, text):
    assert screen(text, keywords) == []


def test_screen_a_custom_list(tmp_path):
    f = tmp_path / "kw.txt"
    f.write_text("# mine\n[Tools]\nkill   # inline comment\nKILL\n\n[other]\nmagic word*\n")
    kw = load_keywords(f)
    assert kw == {"tools": ["kill"], "other": ["magic word*"]}
    assert screen("Skill, killer, kill.", kw) == [("tools", "kill")]
    assert screen("the MAGIC\twords", kw) == [("other", "magic word*")]
    f.write_text("orphan\n[cat]\nx\n")
    with pytest.raises(DistillError, match="line 1.*before any \\[category\\]"):
        load_keywords(f)
    with pytest.raises(DistillError, match="does not exist"):
        load_keywords(tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------------------
# Risk review


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("RISK: SAFE", True),
        ("risk: safe.", True),
        ("RISK: UNSAFE: weapons", False),
        ("RISK: UNSAFE (malware)", False),
        ("RISK: UNSAFE", False),
        ("<think>It is a chemistry question.</think>\nRISK: SAFE", True),
        ("RISK: SAFE\nBut it mentions explosives.", None),
        ("RISK: SAFE\nRISK: UNSAFE: weapons", None),
        ("RISK: SAFE or UNSAFE", None),
        ("RISK: SAFE: weapons", None),
        ("I think this is safe.", None),
        ("", None),
    ],
)
def test_parse_risk_is_strict(reply, expected):
    assert parse_risk(reply) is expected


def risk_rule(user: str) -> str | tuple[int, str]:
    response = user.split("<response>", 1)[1].split("</response>", 1)[0]
    if "BADREQUEST" in response:
        return 400, "context too long"
    if "GARBAGE" in response:
        return "Sure! Here is my review: it depends."
    m = re.search(r"HARMFUL-(\w+)", response)
    if m:
        return f"RISK: UNSAFE: {m.group(1)}"
    return "RISK: SAFE"


def test_review_many_against_a_local_server():
    items = [
        ("How does sarin affect the body?", "It inhibits acetylcholinesterase; treatment is atropine."),
        ("prompt", "HARMFUL-explosives step one ..."),
        ("prompt", "HARMFUL-nonsense"),
        ("prompt", "GARBAGE"),
        ("prompt", "BADREQUEST"),
    ]
    with RuleServer(risk_rule, model="reviewer") as server:
        out = review_many(items, [server.url], retries=0)
        bodies = server.bodies
    assert out[:4] == [(True, ""), (False, "explosives"), (False, "other"), (None, "undecidable")]
    assert out[4][0] is None and out[4][1].startswith("error: HTTP 400")
    assert len(bodies) == 5 and all(b["temperature"] == 0 and b["model"] == "reviewer" for b in bodies)
    assert any("<prompt>\nHow does sarin affect the body?\n</prompt>" in b["messages"][-1]["content"] for b in bodies)


def test_risk_prompt_names_the_answer_format():
    text = RISK_PROMPT.format(prompt="p", response="r")
    assert "RISK: SAFE" in text and "RISK: UNSAFE: <category>" in text
