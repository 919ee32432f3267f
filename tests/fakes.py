"""Real HTTP servers on 127.0.0.1 for client tests: a small OpenAI-compatible server (FakeOpenAI), a
teacher that scores prompt tokens (FakeScorer), a chat server that answers by a rule (RuleServer: the
judge and the safety reviewer) and a fault-injecting proxy that can sit in front of any of them or of
the real vLLM server (FaultProxy).

Each runs an aiohttp app in a background thread, so a test (or a `distill` subprocess) talks to them
over real sockets; nothing in distill is patched.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable

import aiohttp
from aiohttp import web


class _Background:
    """An aiohttp app served from its own thread and event loop on a free port of 127.0.0.1."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=0.1)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        self._ready.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FakeOpenAI(_Background):
    """Answers /v1/chat/completions with a short deterministic completion after `delay` seconds
    (a float, or a callable returning one). Problems containing `fail_marker` get HTTP 500 while
    `failing` is set. Counts requests per prompt in `calls`."""

    def __init__(self, model: str = "fake-teacher", delay: float | Callable[[], float] = 0.0) -> None:
        self.model = model
        self.delay = delay
        self.fail_marker = "POISON"
        self.reasoning = ""  # when set, sent as `reasoning_content` beside the answer (like vLLM's reasoning parsers)
        self.finish_reason = "stop"
        self.wrong_every = 0  # when n > 0, every n-th completion request answers one more than the right sum
        self.respond: Callable[[str], str] | None = None  # when set: the completion for a user message
        self.bodies: list[dict] = []  # every chat request's JSON body
        self.failing = True
        self.calls: Counter[str] = Counter()
        self.requests = 0
        self.max_model_len: int | None = None  # when set: reported in /v1/models, as vLLM does
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        super().__init__(app)

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": self.model, "object": "model"}
        if self.max_model_len:
            card["max_model_len"] = self.max_model_len
        return web.json_response({"object": "list", "data": [card]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        self.bodies.append(body)
        user = body["messages"][-1]["content"]
        self.calls[user] += 1
        delay = self.delay() if callable(self.delay) else self.delay
        if delay:
            await asyncio.sleep(delay)
        if body.get("model") != self.model:
            return web.json_response({"error": f"model {body.get('model')!r} not found"}, status=404)
        if self.failing and self.fail_marker in user:
            return web.json_response({"error": "injected failure"}, status=500)
        if body.get("stream"):  # the first chunk of a streamed answer, then the end
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Adding"}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            await resp.write_eof()
            return resp
        if self.respond is not None:
            text = self.respond(user)
        else:
            numbers = [int(n) for n in re.findall(r"\d+", user)]
            answer = sum(numbers) + (1 if self.wrong_every and self.requests % self.wrong_every == 0 else 0)
            text = f"Adding the numbers gives {answer}.\n\nThe answer is \\boxed{{{answer}}}."
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "chat.completion",
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "reasoning_content": self.reasoning or None},
                        "finish_reason": self.finish_reason,
                        **({"logprobs": self._logprobs(text, body)} if body.get("logprobs") else {}),
                    }
                ],
                "usage": {
                    "prompt_tokens": len(user.split()),
                    "completion_tokens": len(text.split()),
                    "total_tokens": 0,
                },
            }
        )

    def _logprobs(self, text: str, body: dict) -> dict:
        """vLLM-style logprobs: one token per word, id = a stable hash of the word; top-K alternatives
        with ids id+1..id+K-1 after the token itself (as tokens 'token_id:N' when asked for ids)."""
        k = int(body.get("top_logprobs") or 0)
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        name = (lambda i, w: f"token_id:{i}") if as_ids else (lambda i, w: w)  # noqa: E731
        content = []
        for n, word in enumerate(text.split()):
            tid = zlib.crc32(word.encode()) % 50000
            lp = -0.1 * (n % 7)
            alts = [{"token": name(tid, word), "logprob": lp}]
            alts += [{"token": name(tid + j, word + str(j)), "logprob": lp - j} for j in range(1, k)]
            content.append({"token": name(tid, word), "logprob": lp, "top_logprobs": alts[:k]})
        return {"content": content}


class FakeScorer(_Background):
    """A teacher that scores prompt tokens like vLLM's completions endpoint with `prompt_logprobs`:
    token t gets log-probability -0.1 - (t % 5) / 2; with prompt_logprobs k > 0 the entry also lists
    k alternatives (ids t+1.. with lower log-probabilities) with their ranks."""

    def __init__(self, model: str = "fake-teacher", max_model_len: int | None = None) -> None:
        self.model = model
        self.max_model_len = max_model_len  # when set: reported in /v1/models, as vLLM does
        self.scored = 0  # prompt tokens scored
        self.requests = 0  # sequences scored (one request each)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._complete)
        super().__init__(app)

    @staticmethod
    def logprob(token: int) -> float:
        return -0.1 - (token % 5) / 2

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": self.model, "object": "model"}
        if self.max_model_len:
            card["max_model_len"] = self.max_model_len
        return web.json_response({"object": "list", "data": [card]})

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = body["prompt"]
        k = int(body.get("prompt_logprobs") or 0)
        self.scored += len(ids)
        self.requests += 1
        entries: list = [None]
        for t in ids[1:]:
            e = {str(t): {"logprob": self.logprob(t), "rank": 1 if k else 1, "decoded_token": ""}}
            for j in range(1, k):
                e[str(t + j)] = {"logprob": self.logprob(t) - j, "rank": j + 1, "decoded_token": ""}
            entries.append(e)
        return web.json_response(
            {"choices": [{"index": 0, "text": "x", "prompt_logprobs": entries, "finish_reason": "length"}]}
        )


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


FAULTS = ("ok", "500", "429", "reset", "drop", "stall", "garbage")


class FaultProxy(_Background):
    """Forwards every request to `upstream` (…/v1), except that chat completions suffer the fault that
    `plan(n)` returns for the n-th one (0-based): one of FAULTS. `stall` sleeps `stall_seconds`
    before forwarding (longer than the client's timeout); `reset` aborts the TCP connection with a
    RST; `drop` closes it without an answer; `garbage` answers 200 with a body that is not JSON.
    `seen` counts the faults applied."""

    def __init__(self, upstream: str, plan: Callable[[int], str], stall_seconds: float = 30.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.stall_seconds = stall_seconds
        self.seen: Counter[str] = Counter()
        self._n = 0
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        super().__init__(app)

    def _next_fault(self) -> str:
        with self._lock:
            fault = self.plan(self._n)
            self._n += 1
        assert fault in FAULTS, fault
        self.seen[fault] += 1
        return fault

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._next_fault() if request.path.endswith("/chat/completions") else "ok"
        if fault == "500":
            return web.json_response({"error": "injected 500"}, status=500)
        if fault == "429":
            return web.json_response({"error": "injected 429"}, status=429, headers={"Retry-After": "0.2"})
        if fault in ("reset", "drop"):
            transport = request.transport
            if transport is not None:
                if fault == "reset":
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    transport.abort()
                else:
                    transport.close()
            raise asyncio.CancelledError  # nothing more is sent on this connection
        if fault == "garbage":
            return web.Response(status=200, text="<html>proxy error page</html>", content_type="text/html")
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                self.upstream + request.path.removeprefix("/v1"),
                data=body,
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            ) as r:
                return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)


def cycle(*faults: str) -> Callable[[int], str]:
    """A plan that repeats `faults` in order."""
    return lambda n: faults[n % len(faults)]


def random_plan(weights: dict[str, float], seed: int = 0) -> Callable[[int], str]:
    """A plan that draws each fault at random with the given weights (reproducible per n)."""
    names, w = zip(*weights.items(), strict=True)
    return lambda n: random.Random(seed * 1_000_003 + n).choices(names, w)[0]


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
