"""LoRA adapters on the served base model: what ``LLMOPS_ADAPTERS`` asks for, and the checks before vLLM starts.

The operator sets ``LLMOPS_ADAPTERS`` (:data:`._contract.ENV_ADAPTERS`, a JSON list of ``{"name", "uri", "dir",
"base"}``) and renders ``--enable-lora --lora-modules name=dir ...`` among vLLM's args. The entrypoint fetches each
adapter like the model (:func:`._fetch.fetch`), then refuses to start, naming the adapter, when

* its directory has no ``adapter_config.json`` (vLLM reads nothing else to learn the adapter's shape);
* its ``peft_type`` is not ``LORA`` or it has no positive rank ``r``;
* its rank (``r``, or the largest of ``rank_pattern``) is above ``--max-lora-rank`` (vLLM 0.32's default 16 when the
  flag is absent): vLLM 0.32 would otherwise load the model and only then fail to start with "LoRA rank 16 is
  greater than max_lora_rank 8." from deep in its engine;
* its ``base_model_name_or_path`` does not :func:`match` any name the served base is known by
  (:func:`served_names`) and the entry has no ``base``;
* the entry's ``base`` is set (the user's assertion that the adapter fits this model, which overrides the name check)
  but names neither the adapter's ``base_model_name_or_path`` (then the assertion says that name is this model under
  another name) nor the served base (then it says the adapter was trained on this model whatever its config says):
  an assertion about a third model is a mistake.

vLLM itself never compares them: an adapter of another base with the same shapes would load and answer with
garbage, one of other shapes fails late, after the model has loaded.

An adapter whose ``adapter_config.json`` names no base (``null`` or absent) cannot be checked: it is served, and its
log line says ``base_check: "unnamed"``.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import _contract as c

ADAPTER_CONFIG = "adapter_config.json"
#: vLLM 0.32's ``LoRAConfig.max_lora_rank`` when ``--max-lora-rank`` is not given.
VLLM_DEFAULT_MAX_LORA_RANK = 16


class AdapterError(Exception):
    """An adapter the pod must not serve; the message is the one-line reason."""


@dataclass(frozen=True)
class Adapter:
    """One entry of ``LLMOPS_ADAPTERS``."""

    name: str
    uri: str
    dir: str | None = None
    base: str | None = None


def parse(text: str | None) -> list[Adapter]:
    """The adapters ``LLMOPS_ADAPTERS`` names (none when unset or empty); :class:`AdapterError` when it is not a JSON
    list of objects with a non-empty ``name`` and ``uri``, ``dir`` a string (required unless ``uri`` is a local path),
    ``base`` a string or null, the names and directories each used once.

    >>> parse('[{"name": "sql", "uri": "s3://b/sql", "dir": "/var/cache/llmops/adapters/sql", "base": null}]')
    [Adapter(name='sql', uri='s3://b/sql', dir='/var/cache/llmops/adapters/sql', base=None)]
    """
    if not text or not text.strip():
        return []
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise AdapterError(f"{c.ENV_ADAPTERS} is not JSON ({error})") from None
    if not isinstance(raw, list):
        raise AdapterError(f"{c.ENV_ADAPTERS} must be a JSON list of adapters, not {type(raw).__name__}")
    out: list[Adapter] = []
    for index, item in enumerate(raw):
        where = f"{c.ENV_ADAPTERS}[{index}]"
        if not isinstance(item, dict):
            raise AdapterError(f"{where} must be an object with name, uri, dir and base, not {type(item).__name__}")
        name, uri, dir_, base = item.get("name"), item.get("uri"), item.get("dir"), item.get("base")
        if not isinstance(name, str) or not name.strip():
            raise AdapterError(f"{where} has no name (a non-empty string)")
        if not isinstance(uri, str) or not uri.strip():
            raise AdapterError(f"{where} ({name}) has no uri (a non-empty string)")
        for field, value in (("dir", dir_), ("base", base)):
            if value is not None and not isinstance(value, str):
                raise AdapterError(f"{where} ({name}): {field} must be a string or null, not {type(value).__name__}")
        if not dir_ and _fetched(uri):
            raise AdapterError(f"{where} ({name}): no dir to fetch {uri} into")
        out.append(Adapter(name=name, uri=uri, dir=dir_ or None, base=base or None))
    for field in ("name", "dir"):
        seen = [getattr(a, field) for a in out if getattr(a, field)]
        twice = sorted({v for v in seen if seen.count(v) > 1})
        if twice:
            raise AdapterError(f"{c.ENV_ADAPTERS} uses the {field} {twice[0]!r} for more than one adapter")
    return out


def _fetched(uri: str) -> bool:
    return "://" in uri or uri.startswith(("models:/", "runs:/", "mlflow-artifacts:/"))


@dataclass(frozen=True)
class Name:
    """A model name reduced for comparison: its last path component and, when it has one, its Hugging Face repo id
    (``org/name``), both lower-cased."""

    last: str
    repo: str | None = None


_HUB_CACHE = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


def reduce(name: str) -> Name | None:
    """The :class:`Name` of a model name, URI or path (None for an empty one).

    * ``hf://org/repo`` and a bare ``org/repo`` (two components, not a path): repo ``org/repo``;
    * ``models:/name/3``, ``models:/name@alias``: the MLflow registered model name;
    * ``s3://``, ``gs://``, ``runs:/``, ``file://``, a path: its last component;
    * a path inside a Hugging Face cache (``.../models--org--repo/snapshots/<sha>``): repo ``org/repo``.

    >>> reduce("hf://Meta-Llama/Llama-3.1-8B/")
    Name(last='llama-3.1-8b', repo='meta-llama/llama-3.1-8b')
    >>> reduce("models:/support-assistant@champion"), reduce("/mnt/models/llama-3.1-8b")
    (Name(last='support-assistant', repo=None), Name(last='llama-3.1-8b', repo=None))
    >>> reduce("/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B/snapshots/0123abc")
    Name(last='qwen2.5-0.5b', repo='qwen/qwen2.5-0.5b')
    """
    text = name.strip().lower()
    hub = text.startswith("hf://")
    if text.startswith("models:/"):
        text = re.split(r"[/@]", text[len("models:/"):].lstrip("/"), maxsplit=1)[0]
    elif "://" in text:
        text = text.split("://", 1)[1]
    elif text.startswith(("runs:/", "mlflow-artifacts:/")):
        text = text.split(":/", 1)[1]
    parts = [p for p in text.replace("\\", "/").split("/") if p and p != "."]
    if not parts:
        return None
    for part in parts:
        cached = _HUB_CACHE.match(part)
        if cached:
            return Name(last=cached["name"], repo=f"{cached['org']}/{cached['name']}")
    looks_like_repo = len(parts) == 2 and not text.startswith(("/", ".", "~"))
    return Name(last=parts[-1], repo="/".join(parts[-2:]) if (hub and len(parts) >= 2) or looks_like_repo else None)


def match(name: str, known: Iterable[str]) -> bool:
    """Whether ``name`` (an adapter's ``base_model_name_or_path``) is one of ``known`` (the served base's names).

    Two names match when both have a Hugging Face repo id and the ids are equal, or otherwise when their last path
    components are equal, case-insensitively: ``/data/llama-3.1-8b`` is ``meta-llama/Llama-3.1-8B``, but
    ``other-org/Llama-3.1-8B`` is not (another repository of the same name is another model).

    >>> match("meta-llama/Llama-3.1-8B", ["hf://meta-llama/llama-3.1-8b"]), match("/data/Llama-3.1-8B", ["meta-llama/Llama-3.1-8B"])
    (True, True)
    >>> match("other-org/Llama-3.1-8B", ["meta-llama/Llama-3.1-8B"]), match("Qwen/Qwen2.5-0.5B", ["models:/chat/3", "tiny"])
    (False, False)
    """
    mine = reduce(name)
    if mine is None:
        return False
    for other in filter(None, (reduce(k) for k in known)):
        if mine.repo and other.repo:
            if mine.repo == other.repo:
                return True
        elif mine.last == other.last:
            return True
    return False


def served_names(*, uri: str, model_path: str, source: str, served_model_names: Sequence[str] = (),
                 model_arg: str | None = None) -> list[str]:
    """The names the served base model is known by, in order, without repeats: ``LLMOPS_MODEL_URI`` (the hf:// repo id,
    the MLflow registered model name, a path), its ``config.json``'s ``_name_or_path`` when the model is on disk here
    (fetched or local), the served model names (``LLMOPS_SERVED_MODEL_NAME``, ``--served-model-name``) and
    ``--model`` unless it is the fetched model's cache directory (named after the revision, not the model)."""
    names = [uri]
    if source != "hub":
        try:
            config = json.loads((pathlib.Path(model_path) / "config.json").read_text())
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict) and isinstance(config.get("_name_or_path"), str):
            names.append(config["_name_or_path"])
    names += served_model_names
    if model_arg and (source in ("local", "hub") or model_arg != model_path):
        names.append(model_arg)
    out: list[str] = []
    for n in names:
        if n and n.strip() and n not in out:
            out.append(n)
    return out


@dataclass(frozen=True)
class Checked:
    """What an adapter's ``adapter_config.json`` says, once accepted: ``base_check`` is ``name`` (its base is one of
    the served base's names), ``asserted`` (the entry's ``base`` vouches for it) or ``unnamed`` (it names no base)."""

    base: str | None
    rank: int
    base_check: str


def check(adapter: Adapter, path: pathlib.Path, *, known: Sequence[str], max_rank: int) -> Checked:
    """Read ``path``/adapter_config.json and accept it or raise :class:`AdapterError` (see the module docstring)."""
    label = f"adapter {adapter.name!r} ({adapter.uri})"
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except FileNotFoundError:
        raise AdapterError(f"{label}: {path} has no {ADAPTER_CONFIG}; a LoRA adapter is a PEFT directory "
                           f"(adapter_config.json and adapter_model.safetensors)") from None
    except (OSError, ValueError) as error:
        raise AdapterError(f"{label}: cannot read {path / ADAPTER_CONFIG}: {type(error).__name__}: {error}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{label}: {path / ADAPTER_CONFIG} is not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise AdapterError(f"{label}: its {ADAPTER_CONFIG} has peft_type {peft_type!r}; vLLM serves LoRA adapters only")
    r = config.get("r")
    pattern = config.get("rank_pattern") or {}
    ranks = [r, *(pattern.values() if isinstance(pattern, dict) else [])]
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in ranks):
        raise AdapterError(f"{label}: its {ADAPTER_CONFIG} has no positive integer rank r (r={r!r}, rank_pattern={pattern!r})")
    rank = max(ranks)
    if rank > max_rank:
        raise AdapterError(f"{label}: its rank {rank} is above --max-lora-rank {max_rank}; raise the maximum rank "
                           f"(vLLM allows 1, 8, 16, 32, 64, 128, 256, 320, 512) or serve a smaller adapter")
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        return Checked(base=None, rank=rank, base_check="unnamed")
    if match(base, known):
        return Checked(base=base, rank=rank, base_check="name")
    if adapter.base and (match(base, [adapter.base]) or match(adapter.base, known)):
        return Checked(base=base, rank=rank, base_check="asserted")
    asserted = f"; its base is set to {adapter.base!r}, which is neither" if adapter.base else (
        "; if that is this model under another name, set the adapter's base to it")
    raise AdapterError(f"{label} was trained on {base!r} (base_model_name_or_path in its {ADAPTER_CONFIG}) but this pod "
                       f"serves {known[0]!r} (known as {', '.join(repr(k) for k in known[1:]) or 'nothing else'}){asserted}")
