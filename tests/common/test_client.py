"""The OpenAI-compatible client shared by every stage that calls a server: messages, sampling, backoff."""

import pytest

from distill.common.client import backoff, build_messages
from distill.common.errors import DistillError


def test_prompt_template():
    msgs = build_messages("What is 2+2?", "{problem}\nPut it in \\boxed{{}}.", "Be brief.")
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?\nPut it in \\boxed{}."},
    ]
    with pytest.raises(DistillError, match="prompt_template"):
        build_messages("x", "{question}")


def test_backoff_grows_with_jitter_and_honours_retry_after():
    waits = [backoff(a) for a in (1, 2, 3, 4, 5, 6, 7) for _ in range(50)]
    assert all(0 <= w <= 60 for w in waits) and len(set(waits)) > 100
    assert max(backoff(6) for _ in range(200)) > max(backoff(1) for _ in range(200))
    assert backoff(3, retry_after=2.5) == 2.5
