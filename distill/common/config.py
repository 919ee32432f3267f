"""Typed configuration: the machinery every stage's config uses, and the server's config.

Each stage has a dataclass (in its package's `config.py`) whose fields all have defaults and a help text.
A YAML recipe maps 1:1 onto the fields; precedence is default < `--config FILE` < `--set` < flags. An
unknown key is an error that names the key and the file. The resolved config is written next to every
output (`distill_config.yaml`), so any output folder says exactly what produced it.

A field made with `group(...)` holds a sub-config whose keys stay flat for users: `lora_r` in a recipe,
`--lora-r` on the command line and in the saved config, `cfg.lora.lora_r` in code. A field whose type
is a plain dataclass (`serve:`) is nested: `serve: {max_model_len: 8192}`, `--set serve.max_model_len=8192`.

`distill train` recipes may also carry any field of TRL's SFTConfig (validated against it); those
land in `TrainConfig.sft` and go to SFTConfig unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.common.errors import DistillError

DEFAULT_PROMPT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CONFIG_FILENAME = "distill_config.yaml"
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def option(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its default and the help text its flag shows."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def group(cls: type, help: str) -> Any:
    """A sub-config whose fields are spelled flat (recipe keys, flags, saved config): see the module doc."""
    return field(default_factory=cls, metadata={"help": help, "flat": True})


def _groups(cls: type) -> dict[str, type]:
    """The flat groups of a config class: field name -> sub-config class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("flat")}


def flat_fields(cls: type) -> list[tuple[dataclasses.Field, Any, str | None]]:
    """(field, type, owning group or None) for every key a user can set, groups flattened."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[dataclasses.Field, Any, str | None]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("flat"):
            sub = hints[f.name]
            sub_hints = typing.get_type_hints(sub)
            out += [(g, sub_hints[g.name], f.name) for g in dataclasses.fields(sub)]
        else:
            out.append((f, hints[f.name], None))
    return out


# --------------------------------------------------------------------------------------------------
# Stage configs


@dataclass
class ServeConfig:
    """Start vLLM's OpenAI-compatible server for a model and wait until it answers.

    Any other vLLM server flag goes after `--`: `distill serve --model M -- --enable-prefix-caching`."""

    model: str = option("embedded:teacher", "model spec: embedded:teacher|embedded:student, a folder or a Hub id")
    host: str = option("127.0.0.1", "address to bind")
    port: int = option(0, "port to bind (0: pick a free one)")
    served_model_name: str = option("", "name clients request the model by ('' = a short name derived from --model)")
    max_model_len: int = option(4096, "longest prompt + completion in tokens (vLLM --max-model-len)")
    dtype: str = option(
        "auto",
        "weights dtype for vLLM (--dtype); auto: bfloat16 on GPUs and on CPUs with native bf16 (avx512_bf16 or "
        "AMX), float32 on other CPUs, where bf16 is emulated and ran ~3x slower",
    )
    tensor_parallel_size: int = option(1, "GPUs one model replica is split across, layer by layer (vLLM -tp)")
    pipeline_parallel_size: int = option(1, "pipeline stages (vLLM -pp); with Ray, stages may sit on different nodes")
    data_parallel_size: int = option(1, "independent model replicas behind this one server (vLLM -dp)")
    gpu_memory_utilization: float = option(0.0, "GPU only: share of GPU memory vLLM may take (0: vLLM's default, 0.9)")
    distributed_executor_backend: str = option("", "'' (vLLM picks), mp or ray (ray for a model spanning nodes)")
    startup_timeout: float = option(900.0, "seconds to wait for the server to answer before giving up")
    cpu_kvcache_gb: float = option(4.0, "CPU only: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    extra_args: list[str] = option(
        [], "further vLLM server flags, passed through unchanged (on the command line: after --)"
    )

    def __post_init__(self) -> None:
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, key) < 1:
                raise DistillError(f"serve: key '{key}' must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.gpu_memory_utilization <= 1.0:
            raise DistillError(
                f"serve: key 'gpu_memory_utilization' must lie in [0, 1], got {self.gpu_memory_utilization}"
            )


# --------------------------------------------------------------------------------------------------
# Building configs from YAML and flags


def _field_types(cls: type) -> dict[str, Any]:
    """Every key a user can set (groups flattened) -> its type."""
    return {f.name: tp for f, tp, _ in flat_fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML or flag value to a field's type; raise a DistillError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        tp = args[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DistillError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, source=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise DistillError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DistillError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise DistillError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise DistillError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise DistillError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise DistillError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise DistillError(f"{where}: expected a list, got {value!r}")
        item_type = (typing.get_args(tp) or [None])[0]
        return [_coerce(v, item_type, f"{where}[{i}]") if item_type else v for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise DistillError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def build(cls: type, values: dict, source: str = "config", extra: set[str] | None = None) -> Any:
    """Make a `cls` from a dict, rejecting unknown keys (unless in `extra`, returned in `.sft`)."""
    types_ = _field_types(cls)
    known: dict[str, Any] = {}
    passthrough: dict[str, Any] = {}
    for key, value in values.items():
        if key in types_:
            known[key] = _coerce(value, types_[key], f"{source}: key '{key}'")
        elif extra is not None and key in extra:
            passthrough[key] = value
        else:
            hint = ", ".join(sorted(types_))
            raise DistillError(f"{source}: unknown key '{key}' (valid keys: {hint})")
    owner = {f.name: g for f, _, g in flat_fields(cls) if g}
    grouped: dict[str, dict[str, Any]] = {}
    for key in [k for k in known if k in owner]:
        grouped.setdefault(owner[key], {})[key] = known.pop(key)
    for name, sub in _groups(cls).items():
        known[name] = sub(**grouped.get(name, {}))
    obj = cls(**known)
    if passthrough:
        obj.sft = {**passthrough, **getattr(obj, "sft", {})}
    return obj


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise DistillError(f"config file {p} is a folder: pass a YAML file (e.g. {p}/distill_config.yaml)")
    if not p.is_file():
        raise DistillError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DistillError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise DistillError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillError(f"{p}: expected a mapping of keys to values at the top level")
    return _numbers(data)


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as text; every recipe that writes it means a number."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: `override` wins, nested mappings merge key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One `--flag` per scalar/list field; defaults are suppressed so only given flags override."""
    for f, tp, _ in flat_fields(cls):
        if f.name in skip or dataclasses.is_dataclass(tp) or tp is dict:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        if tp is list or typing.get_origin(tp) is list:
            parser.add_argument(flag, dest=f.name, nargs="+", default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_, metavar=f.name.upper())
    parser.add_argument("--config", help="YAML recipe; its keys are the fields above")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key, nested with dots (e.g. serve.max_model_len=8192, learning_rate=1e-4)",
    )


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise DistillError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as text; a number was meant
            try:
                value = float(value) if _FLOAT.fullmatch(value.strip()) else value
            except ValueError:
                pass
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# Keys that `save` adds to a resolved config to record what ran; a saved config given back with
# --config is accepted (its stage must match the command), and these keys are not settings.
RECORD_KEYS = ("stage", "input", "resolved_model", "data_system_prompt")


def _without_record_keys(cls: type, values: dict, source: str) -> dict:
    stage = cls.__name__.removesuffix("Config").lower()
    if "stage" in values and values["stage"] != stage:
        raise DistillError(f"{source}: this config is for `distill {values['stage']}`, not `distill {stage}`")
    return {k: v for k, v in values.items() if k not in RECORD_KEYS}


def _check_keys(cls: type, values: dict, source: str, extra: set[str] | None) -> None:
    names = set(_field_types(cls))
    for key in values:
        if key not in names and (extra is None or key not in extra):
            raise DistillError(f"{source}: unknown key '{key}' (valid keys: {', '.join(sorted(names))})")


def from_args(
    cls: type,
    args: argparse.Namespace,
    base: dict | None = None,
    base_source: str = "recipe",
    extra: set[str] | None = None,
) -> Any:
    """default < `base` (e.g. a size recipe) < --config FILE < --set < flags; each layer's keys checked."""
    layers = [(base_source, dict(base or {}))]
    if getattr(args, "config", None):
        layers.append((str(args.config), _without_record_keys(cls, load_yaml(args.config), str(args.config))))
    layers.append(("--set", parse_overrides(getattr(args, "overrides", []))))
    names = set(_field_types(cls))
    layers.append(("command line", {k: v for k, v in vars(args).items() if k in names}))
    values: dict = {}
    for source, layer in layers:
        _check_keys(cls, layer, source, extra)
        values = merge(values, layer)
    source = next((s for s, layer in reversed(layers) if layer), "config")
    return build(cls, values, source=source, extra=extra)


def to_dict(cfg: Any) -> dict:
    """The config as the user spells it: flat groups flattened into the top level."""
    out = dataclasses.asdict(cfg)
    for name in _groups(type(cfg)):
        out.update(out.pop(name))
    return out


def save(cfg: Any, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the resolved config next to an output (atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"stage": type(cfg).__name__.removesuffix("Config").lower(), **to_dict(cfg), **(extra or {})}
    path = folder / CONFIG_FILENAME
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path
