"""`distill generate --logprobs K`: the teacher's top-K log-probabilities per token asked for, stored in
each row, and the server's limit raised when K is over vLLM's default (distill.common.logprobs packs them)."""

import zlib

import numpy as np
import pytest

from distill.common.errors import DistillError
from distill.common.logprobs import unpack
from distill.common.records import write_jsonl
from distill.generation.config import GenerateConfig
from distill.generation.generate import run
from tests.fakes import FakeOpenAI, read_rows


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
    from distill.common.client import sampling_params

    assert sampling_params(0.6, 1.0, 64) == {"temperature": 0.6, "top_p": 1.0, "max_tokens": 64}
    with pytest.raises(DistillError, match="--logprobs"):
        run(GenerateConfig(logprobs=-1))


def test_more_than_twenty_logprobs_raise_the_limit_of_the_server_generate_starts(tmp_path, monkeypatch):
    import contextlib

    from distill.common.server import connect_all
    from distill.generation import generate

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
