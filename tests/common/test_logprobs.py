"""The teacher's top-K log-probabilities per token (`distill generate --logprobs K`): parsed from the
server's reply, stored compactly in each row and read back exactly (ids) or to float16 precision
(log-probabilities). tests/generation/test_generate_logprobs.py asks a server for them."""

import json

import numpy as np
import pytest

from distill.common.errors import DistillError
from distill.common.logprobs import TokenLogprobs, pack, parse_chat_logprobs, unpack


def test_pack_round_trip_keeps_ids_exactly_and_logprobs_to_float16():
    rng = np.random.default_rng(0)
    t, k = 300, 5
    top_ids = rng.integers(0, 152_000, size=(t, k)).astype(np.int32)
    top_ids[7, 3:] = -1  # the server listed only 3 alternatives here
    top_lps = np.sort(-rng.exponential(2.0, size=(t, k)), axis=1)[:, ::-1].astype(np.float32)
    top_lps[7, 3:] = -np.inf
    tl = TokenLogprobs(top_ids[:, 0].copy(), top_lps[:, 0].copy(), top_ids, top_lps)
    packed = pack(tl)
    assert json.loads(json.dumps(packed)) == packed  # JSON-ready
    back = unpack(json.loads(json.dumps(packed)))
    assert np.array_equal(back.ids, tl.ids) and np.array_equal(back.top_ids, top_ids)
    finite = np.isfinite(top_lps)
    assert np.allclose(back.top_logprobs[finite], top_lps[finite], rtol=1e-3, atol=1e-3)
    assert np.all(np.isneginf(back.top_logprobs[~finite]))
    assert len(back) == t and back.k == k
    # compact: well under the size of the same numbers written as JSON lists
    as_lists = json.dumps({"ids": top_ids.tolist(), "lps": top_lps[finite].round(4).tolist()})
    assert len(packed["data"]) < 0.5 * len(as_lists)


def test_unpack_names_what_is_wrong():
    tl = TokenLogprobs(
        np.array([1], np.int32), np.array([-0.5], np.float32), np.array([[1]], np.int32), np.array([[-0.5]], np.float32)
    )
    packed = pack(tl)
    with pytest.raises(DistillError, match="traces.jsonl, row 3: 'teacher_logprobs' cannot be read"):
        unpack({**packed, "tokens": 2}, where="traces.jsonl, row 3")
    with pytest.raises(DistillError, match="unknown encoding"):
        unpack({**packed, "encoding": "v0"})


def test_text_tokens_are_refused_with_the_reason():
    choice = {"logprobs": {"content": [{"token": "Hello", "logprob": -0.1, "top_logprobs": []}]}}
    with pytest.raises(DistillError, match="token ids"):
        parse_chat_logprobs(choice, 2)
    with pytest.raises(DistillError, match="no logprobs"):
        parse_chat_logprobs({}, 2)


def test_the_sampled_token_listed_first_outside_the_top_k_is_dropped_from_the_top_k():
    """vLLM puts the sampled token first when it is not among the top K: K + 1 entries, unsorted."""
    entry = {
        "token": "token_id:7",
        "logprob": -2.5,
        "top_logprobs": [
            {"token": "token_id:7", "logprob": -2.5},
            {"token": "token_id:1", "logprob": -0.2},
            {"token": "token_id:2", "logprob": -1.9},
        ],
    }
    tl = parse_chat_logprobs({"logprobs": {"content": [entry]}}, 2)
    assert tl.ids.tolist() == [7] and tl.logprobs.tolist() == [-2.5]
    assert tl.top_ids.tolist() == [[1, 2]] and np.allclose(tl.top_logprobs, [[-0.2, -1.9]])
