"""`distill generate --logprobs K`: the teacher's top-K log-probabilities per token, stored compactly
in each row and read back exactly (ids) or to float16 precision (log-probabilities)."""

import json
import zlib

import numpy as np
import pytest

from distill.config import GenerateConfig
from distill.errors import DistillError
from distill.generate import run
from distill.logprobs import TokenLogprobs, pack, parse_chat_logprobs, unpack
from distill.records import write_jsonl
from tests.fakes import FakeOpenAI, read_rows


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


def test_generate_stores_top_k_per_generated_token(tmp_path):
    write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"q{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)]
    )
    with FakeOpenAI() as server:
        cfg = GenerateConfig(
            output=str(tmp_path / "gen"), server_url=[server.url], dataset=str(tmp_path / "p.jsonl"), id_column="id",
            num_prompts=0, num_samples=2, logprobs=4,
        )  # fmt: skip
        run(cfg)
        body = server.bodies[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 4 and body["return_tokens_as_token_ids"] is True
    rows = read_rows(tmp_path / "gen" / "traces.jsonl")
    assert len(rows) == 6
    for r in rows:
        tl = unpack(r["teacher_logprobs"])
        words = r["completion"].split()
        assert len(tl) == len(words) and tl.k == 4
        assert tl.ids.tolist() == [zlib.crc32(w.encode()) % 50000 for w in words]
        assert np.array_equal(tl.top_ids[:, 0], tl.ids) and np.array_equal(tl.top_ids[:, 1], tl.ids + 1)
        assert np.allclose(tl.top_logprobs[:, 1], tl.logprobs - 1, atol=2e-3)
        assert "logprobs" not in r["sampling"] and r["sampling"]["temperature"] == 0.6
    # a resume asking for other logprobs is refused: rows with and without them would mix
    with FakeOpenAI() as server:
        with pytest.raises(DistillError, match="logprobs: 4 -> 0"):
            run(GenerateConfig(**{**cfg.__dict__, "server_url": [server.url], "logprobs": 0, "serve": cfg.serve}))


def test_plain_sampling_params_and_a_bad_logprobs_value():
    from distill.generate import sampling_params

    assert sampling_params(0.6, 1.0, 64) == {"temperature": 0.6, "top_p": 1.0, "max_tokens": 64}
    with pytest.raises(DistillError, match="--logprobs"):
        run(GenerateConfig(logprobs=-1))


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


def test_more_than_twenty_logprobs_raise_the_limit_of_the_server_generate_starts(tmp_path, monkeypatch):
    import contextlib

    from distill import generate
    from distill.server import connect_all

    seen = []

    @contextlib.contextmanager
    def fake_servers(urls, name, serve, log_dir):  # noqa: ARG001 - stands in for starting vLLM
        seen.append(list(serve.extra_args))
        with FakeOpenAI() as server:
            yield connect_all([server.url])

    monkeypatch.setattr(generate, "servers_for", fake_servers)
    write_jsonl(tmp_path / "p.jsonl", [{"id": "q", "problem": "What is 1 + 1?", "answer": "2"}])
    common = dict(dataset=str(tmp_path / "p.jsonl"), id_column="id", num_prompts=0, num_samples=1)
    run(GenerateConfig(output=str(tmp_path / "a"), logprobs=32, **common))
    run(GenerateConfig(output=str(tmp_path / "b"), logprobs=5, **common))
    assert seen == [["--max-logprobs", "32"], []]
