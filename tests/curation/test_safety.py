"""Safety screen (keywords) and risk review (an LLM reviewer, distill.curation.safety) against a real local
HTTP server."""

import re

import pytest

from distill.common.errors import DistillError
from distill.curation.safety import RISK_PROMPT, load_keywords, parse_risk, review_many, screen
from tests.fakes import RuleServer

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
