"""Model card and Hub upload for a `distill train` output folder (`distill train ... --push-to-hub REPO`).

The card (README.md) is built only from the records the folder and its training data hold, so it describes
the run that made the weights: the base model, the training data (the kept.jsonl file, with the teacher and
pass rate from `distill filter`'s report.json when it is still next to it; for a --data mixture, each source
with its weight or count and the rows train_metrics.json says were taken from it), the recipe and the resolved
hyperparameters, the training loss, evaluation results (a `distill eval` results.json of this model found
next to the folder, or given with --eval-results), and how to serve the student with vLLM and evaluate it.

The upload is one commit of the folder's top-level files (weights, tokenizer, configs, metrics, card);
checkpoints/ and adapter/ stay local. Hub and network failures are one-line DistillErrors, as in distill.common.hub.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from distill import __version__
from distill.common.config import CONFIG_FILENAME
from distill.common.errors import DistillError
from distill.common.hub import check_repo_id, markdown_table, portable_path, read_json_object, upload
from distill.common.models import EMBEDDED
from distill.common.resources import recipe_for
from distill.training.config import METHODS, SFT_DEFAULTS, data_sources

CARD = "README.md"
METRICS = "train_metrics.json"
RESULTS = "results.json"
# Files never uploaded: the card is generated, the rest are local state or pickles.
SKIP = {CARD, "training_args.bin"}
SKIP_SUFFIXES = (".tmp", ".lock", ".log", ".pt", ".pth", ".pkl")
# SFTConfig keys shown in the card's hyperparameter table, when the run set them (or distill's defaults did).
HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "max_grad_norm",
    "weight_decay",
    "bf16",
    "gradient_checkpointing",
    "packing",
    "padding_free",
    "use_liger_kernel",
    "seed",
)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------------------------------
# What the records say


def base_model_id(spec: str) -> str:
    """The Hub id of the student's base model: embedded models by their upstream id, a local `distill
    train` output by the model it was trained from, a Hub id as itself."""

    if spec.startswith("embedded:"):
        emb = EMBEDDED.get(spec.split(":", 1)[1])
        return emb.hf_id if emb else spec
    path = Path(spec).expanduser()
    if path.is_dir():
        upstream = _read_yaml(path / CONFIG_FILENAME).get("model")
        if isinstance(upstream, str) and upstream and upstream != spec:
            return base_model_id(upstream)
        return path.name
    return spec


def data_summary(data: str) -> dict:
    """The training file and what `distill filter` and `distill generate` recorded about it, when present."""
    path = Path(data)
    file = path / "kept.jsonl" if path.is_dir() else path
    info: dict[str, Any] = {"file": portable_path(str(data if not path.is_dir() else file))}
    report = read_json_object(file.parent / "report.json")
    if report:
        info.update({k: report[k] for k in ("total", "kept", "pass_rate", "prompts") if k in report})
        if report.get("input"):
            info["traces"] = portable_path(str(report["input"]))
            src = Path(report["input"])
            gen = _read_yaml((src if src.is_dir() else src.parent) / CONFIG_FILENAME)
            if gen.get("stage") == "generate":
                info["teacher"] = gen.get("teacher")
                info["sampling"] = {k: gen[k] for k in ("temperature", "top_p", "max_tokens") if k in gen}
    if file.is_file():
        with open(file, encoding="utf-8") as f:
            first = f.readline()
        try:
            row = json.loads(first) if first.strip() else {}
        except json.JSONDecodeError:
            row = {}
        if isinstance(row, dict) and row.get("teacher"):
            info["teacher"] = row["teacher"]  # the served name is more telling than an embedded: spec
    return info


def _data_section(data: dict, rows: Any) -> list[str]:
    """The training-data table of one --data source."""
    data_rows: list[list[Any]] = [["file", f"`{data['file']}`"]]
    if rows is not None:
        data_rows.append(["rows trained on", rows])
    data_rows.append(["teacher", f"`{data['teacher']}`" if data.get("teacher") else "not recorded"])
    if "kept" in data and "total" in data:
        rate = data.get("pass_rate")
        rate_text = f" ({rate:.1%} pass rate)" if isinstance(rate, (int, float)) else ""
        data_rows.append(["verified by `distill filter`", f"{data['kept']} of {data['total']} traces kept{rate_text}"])
    if data.get("traces"):
        data_rows.append(["traces", f"`{data['traces']}`"])
    if data.get("sampling"):
        data_rows.append(["teacher sampling", ", ".join(f"{k} {v}" for k, v in data["sampling"].items())])
    return [markdown_table(["", ""], data_rows), ""]


def _mixture(data: Any) -> list[tuple[Any, dict]]:
    """(source, data_summary) of each --data entry when the config trained on a mixture, else []."""
    if not isinstance(data, list):
        return []
    try:
        sources = data_sources([str(d) for d in data])
    except DistillError:
        return []
    return [(s, data_summary(s.path)) for s in sources]


def _mixture_section(mixture: list[tuple[Any, dict]], record: dict, rows: Any) -> list[str]:
    """The training-data table of a --data mixture: each source, what was asked of it, the rows it gave."""
    taken = {r.get("data"): r for r in record.get("sources") or []}
    seed = f", drawn and shuffled with seed {record['seed']}" if "seed" in record else ""
    total = f"{rows} rows" if rows is not None else "rows"
    lines = [f"A mixture of {len(mixture)} sources ({total}{seed}):\n"]
    table = []
    for src, data in mixture:
        rec = taken.get(src.spec, {})
        asked = f"weight {src.weight:g}" if src.weight else f"{src.count} rows" if src.count else "all rows"
        kept = f"{data['kept']} of {data['total']}" if "kept" in data and "total" in data else "not recorded"
        share = f"{rec['share']:.1%}" if isinstance(rec.get("share"), (int, float)) else "?"
        table.append(
            [f"`{data['file']}`", asked, rec.get("rows_taken", "?"), share, f"`{data.get('teacher') or '?'}`", kept]
        )
    header = ["source", "asked", "rows trained on", "share", "teacher", "kept by `distill filter`"]
    return [*lines, markdown_table(header, table), ""]


def _same_model(model: str, folder: Path, names: tuple[str, ...]) -> bool:
    if not isinstance(model, str) or not model:
        return False
    if model in names:
        return True
    try:
        return Path(model).expanduser().resolve() == folder.resolve()
    except OSError:
        return False


def find_eval_results(folder: str | Path, given: str = "", repo_id: str = "") -> list[dict]:
    """`distill eval` results for the card: the results.json `given` (a file or the folder holding it), else
    every results.json in the folder, its subfolders or its sibling folders whose `model` is this folder
    (or the repo id). Each gets a `_path` key saying where it came from."""
    folder = Path(folder)
    if given:
        path = Path(given)
        path = path / RESULTS if path.is_dir() else path
        if not path.is_file():
            raise DistillError(f"--eval-results: {path} does not exist (pass a `distill eval` output folder)")
        results = read_json_object(path)
        if "pass@1" not in results:
            raise DistillError(f"--eval-results: {path} is not a `distill eval` results.json (no pass@1)")
        return [{**results, "_path": str(path)}]
    cfg = _read_yaml(folder / CONFIG_FILENAME)
    names = tuple(n for n in (str(cfg.get("output") or ""), str(folder), repo_id) if n)
    candidates = [folder / RESULTS, *folder.glob(f"*/{RESULTS}"), *folder.parent.glob(f"*/{RESULTS}")]
    found, seen = [], set()
    for path in candidates:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            results = read_json_object(path)
        except DistillError:
            continue
        if "pass@1" in results and _same_model(results.get("model", ""), folder, names):
            found.append({**results, "_path": str(path)})
    return sorted(found, key=lambda r: (str(r.get("tasks")), r["_path"]))


# --------------------------------------------------------------------------------------------------
# The card


def _hyperparameters(cfg: dict) -> dict:

    sft = {**SFT_DEFAULTS, **(cfg.get("sft") or {})}
    return {k: sft[k] for k in HYPERPARAMETERS if k in sft and sft[k] is not None}


def _method(cfg: dict, metrics: dict) -> str:
    r = int(cfg.get("lora_r") or 0)
    if not r:
        return "full fine-tuning (every weight trained)"
    alpha = cfg.get("lora_alpha") or 2 * r
    kind = "QLoRA (base frozen in 4-bit NF4)" if cfg.get("load_in_4bit") else "LoRA"
    how = "merged into the base weights" if cfg.get("merge_lora") else "this repo holds the adapter only"
    targets = cfg.get("lora_target_modules", "all-linear")
    trainable = f", {metrics['trainable_params']:,} trainable parameters" if metrics.get("trainable_params") else ""
    return f"{kind}, r={r}, alpha={alpha}, dropout {cfg.get('lora_dropout', 0.05)}, on {targets}{trainable}; {how}"


def _recipe(cfg: dict) -> str:

    method = str(cfg.get("method") or "sft")
    try:
        path = recipe_for(str(cfg.get("size") or "tiny"), method)
    except DistillError:
        return ""
    return f"recipes/{method}/{path.name}"


def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def model_card(folder: str | Path, repo_id: str, eval_results: str = "") -> str:
    """README.md for the student in `folder` (a `distill train` output) pushed as `repo_id`."""
    folder = Path(folder)
    cfg = _read_yaml(folder / CONFIG_FILENAME)
    if cfg.get("stage") not in (None, "train"):
        raise DistillError(f"{folder / CONFIG_FILENAME} is the config of `distill {cfg['stage']}`, not of a student")
    metrics = read_json_object(folder / METRICS)
    base = base_model_id(str(cfg.get("model") or "unknown"))
    adapter = _is_adapter(folder)
    name = repo_id.split("/")[-1]
    mixture = _mixture(cfg.get("data"))
    data = {} if mixture else data_summary(str(cfg.get("data") or ""))
    evals = find_eval_results(folder, eval_results, repo_id)
    hyper = _hyperparameters(cfg)
    teachers = sorted({str(d["teacher"]) for _, d in mixture if d.get("teacher")}) if mixture else [data.get("teacher")]
    of = (
        "several teachers"
        if len(teachers) > 1
        else f"`{teachers[0] if teachers and teachers[0] else 'a teacher model'}`"
    )
    rows = metrics.get("train_rows")

    method = str(cfg.get("method") or "sft")
    tags = ["distill", "reasoning", method, "trl"] + (["lora", "peft"] if cfg.get("lora_r") else [])
    front = {
        "base_model": base,
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": tags,
        "license": "other",
    }
    out = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    what = "A LoRA adapter for" if adapter else "A student model fine-tuned from"
    out.append(
        f"{what} [`{base}`](https://huggingface.co/{base}) {METHODS.get(method, METHODS['sft']).card} "
        f"{rows if rows is not None else 'the'} reasoning traces of {of} that `distill filter` verified as "
        f"correct, made with distill {__version__}. The loss covers only the assistant's "
        "answer, which ends with the EOS token, so the student learns to stop.\n"
    )

    out.append("## Training data\n")
    out += _mixture_section(mixture, metrics.get("mixture") or {}, rows) if mixture else _data_section(data, rows)

    out.append("## Training\n")
    recipe = _recipe(cfg)
    train_rows: list[list[Any]] = []
    if recipe:
        flag = f" --method {method}" if method != "sft" else ""
        train_rows.append(["recipe", f"`{recipe}` (`distill train{flag} --size {cfg.get('size')}`)"])
    train_rows.append(["method", _method(cfg, metrics)])
    template = f"`{cfg['chat_template']}`" if cfg.get("chat_template") else "the base tokenizer's"
    train_rows.append(["chat template", f"{template} (saved as chat_template.jinja)"])
    if metrics.get("eos_token"):
        train_rows.append(["EOS / end-of-turn token", f"`{metrics['eos_token']}` (in generation_config.json)"])
    for key, value in hyper.items():
        train_rows.append([f"`{key}`", value])
    world = metrics.get("world_size")
    if world:
        batch = hyper.get("per_device_train_batch_size", 1) * hyper.get("gradient_accumulation_steps", 1) * world
        kind = metrics.get("distributed_type") or ""
        train_rows.append(["processes", f"{world}" + (f" ({kind})" if kind and kind != "NO" else "")])
        train_rows.append(["sequences per optimizer step", batch])
    if metrics:
        train_rows.append(["optimizer steps", metrics.get("steps")])
        if metrics.get("first_loss") is not None:
            train_rows.append(
                ["training loss", f"{metrics['first_loss']:.4g} (first step) → {metrics['last_loss']:.4g}"]
            )
        if metrics.get("seconds") is not None:
            secs = float(metrics["seconds"])
            train_rows.append(["training time", f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.1f} min"])
    out += [markdown_table(["", ""], train_rows), ""]
    out.append(
        f"The resolved configuration is `{CONFIG_FILENAME}` in this repo; `train_metrics.json` and "
        "`log_history.json` hold the metrics and the loss per logging step.\n"
    )

    out.append("## Evaluation\n")
    if evals:
        table = []
        for r in evals:
            sampling = r.get("sampling") or {}
            table.append(
                [
                    r.get("tasks", "?"),
                    r.get("n", "?"),
                    f"{r['pass@1']:.1%}" if isinstance(r.get("pass@1"), (int, float)) else r.get("pass@1"),
                    r.get("mean_completion_tokens", ""),
                    r.get("truncated", ""),
                    ", ".join(f"{k} {v}" for k, v in sampling.items()),
                ]
            )
        out.append("pass@1 from `distill eval`:\n")
        out += [
            markdown_table(
                ["benchmark", "problems", "pass@1", "mean completion tokens", "cut at max_tokens", "sampling"], table
            ),
            "",
        ]
    else:
        out.append("Not evaluated yet: see below for `distill eval`.\n")

    out.append("## Use\n")
    max_len = hyper.get("max_length") or 4096
    if adapter:
        r = cfg.get("lora_r") or 16
        out.append(
            "This repo is a LoRA adapter. The base tokenizer's EOS token and chat template may differ from the "
            "ones the adapter was trained with, so point vLLM at this repo's copies:\n"
        )
        out.append(
            "```bash\n"
            f"hf download {repo_id} --local-dir {name}\n"
            f"vllm serve {base} --enable-lora --max-lora-rank {r} --lora-modules {name}=./{name} \\\n"
            f"    --chat-template ./{name}/chat_template.jinja --generation-config ./{name} --max-model-len {max_len}\n"
            f"distill eval --server-url http://127.0.0.1:8000/v1 --served-model-name {name} --tasks builtin "
            f"--output runs/eval-{name}\n"
            "```\n"
        )
        out.append("Or train with `--merge-lora true` for a plain model that vLLM serves without flags.\n")
    else:
        out.append("Serve it with vLLM (the chat template and stop token come with the tokenizer), and evaluate it:\n")
        out.append(
            "```bash\n"
            f"vllm serve {repo_id} --max-model-len {max_len}\n"
            f"distill eval --model {repo_id} --tasks builtin --output runs/eval-{name}\n"
            "```\n"
        )
    out.append(
        f"Framework versions: distill {__version__}, transformers {_version('transformers')}, trl "
        f"{_version('trl')}"
        + (f", peft {_version('peft')}" if cfg.get("lora_r") else "")
        + f", torch {_version('torch')}.\n"
    )
    out.append("## License\n")
    out.append(
        f"The weights derive from `{base}` and were trained on outputs of {of}: their licenses and terms of "
        "use apply.\n"
    )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Upload


def files_to_upload(folder: str | Path) -> list[Path]:
    """The top-level files of a `distill train` output that make up the model repo (the card aside)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise DistillError(f"{folder} holds no trained model (config.json or adapter_config.json): nothing to push")
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and f.name not in SKIP and not f.name.startswith(".") and f.suffix not in SKIP_SUFFIXES
    )


def push_model(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    eval_results: str = "",
) -> str:
    """Write the card into `folder` and upload the folder's model files to the Hub model repo `repo_id` in
    one commit (distill.common.hub.upload). Returns the repo URL."""
    check_repo_id(repo_id)
    folder = Path(folder)
    files = files_to_upload(folder)

    def card(full_id: str) -> str:
        text = model_card(folder, full_id, eval_results)
        (folder / CARD).write_text(text, encoding="utf-8")  # the local folder shows what the repo holds
        return text

    card(repo_id)  # before the Hub: a folder the card cannot describe fails here
    return upload(repo_id, "model", files, card, f"distill train: {folder.name}", private, token, revision, endpoint)
