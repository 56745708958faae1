"""What a text run starts from, settled before its data and model are built: the tokenizer of the
model it continues (``init_from=RUN``, ``init_from=hf:DIR``, or the run it resumes), and for
``hf:DIR`` the GPT settings its config.json gives. Token ids mean what the weights learned, so a
run that continues a model keeps that model's tokenizer; typing another one is refused in one line.
The config is set to what is used, so the run's recipe (and ``mimicry sample``) tells the truth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, read_write

from mimicry.checkpoints import read_checkpoint, read_derived, saved_data_spec
from mimicry.errors import MimicryError
from mimicry.models.hf_gpt2 import is_hf, read_pretrained

TEXT_DATA = "mimicry.data.text.TextDataModule"
PREFERENCE_DATA = "mimicry.data.preferences.PreferenceDataModule"
TOKENIZED = ("text", "preferences")  # data specs that carry the tokenizer their ids belong to
GPT = "mimicry.models.gpt.GPT"


def typed_values() -> dict[str, str]:
    """``key: value`` of the overrides on this command line (a resumed run's saved ones among them)."""
    typed = {}
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        typed[key] = value.strip("'\"")
    return typed


def starting_data_options(cfg: DictConfig, resume_from: Path | None) -> dict[str, Any]:
    """Keyword arguments for the datamodule (``tokenizer_state``); sets ``cfg.model`` and ``cfg.data``'s
    tokenizer to what the run starts from. ``resume_from``: the checkpoint a resumed run continues."""
    init_from, typed = cfg.get("init_from"), typed_values()
    state = None
    # a model with a _target_ is built by the runner (task=lm); RL on text's (model.from_run) is read by its task
    builds_model = cfg.get("model") is not None and cfg.model.get("_target_") is not None
    if is_hf(init_from):
        if not builds_model and cfg.get("data") is None:
            return {}  # RL on text reads the folder itself
        pretrained = read_pretrained(init_from)
        if builds_model:
            use_pretrained_model(cfg, pretrained.settings, init_from, typed)
        if cfg.get("data") is not None:
            state = pretrained.tokenizer
            check_text_data(cfg, init_from)
            keep_tokenizer(cfg, state, f"init_from={init_from} comes with its own tokenizer", typed)
    elif init_from and resume_from is None:
        spec = saved_data_spec(init_from)
        if spec.get("kind") in TOKENIZED and cfg.get("data") is not None:
            state = spec["tokenizer"]
            keep_tokenizer(cfg, state, f"init_from={init_from} was trained with it", typed)
    if resume_from is not None and cfg.get("data") is not None:  # the tokenizer the checkpoint's ids belong to
        spec = read_derived(read_checkpoint(resume_from), str(resume_from)).get("data_spec", {})
        if spec.get("kind") in TOKENIZED:
            state = spec["tokenizer"]
            keep_tokenizer(cfg, state, "this run was trained with it, and a resumed run keeps it", typed)
    return {"tokenizer_state": state} if state is not None else {}


def check_text_data(cfg: DictConfig, init_from: str) -> None:
    if cfg.data.get("_target_") not in (TEXT_DATA, PREFERENCE_DATA):
        raise MimicryError(f"init_from={init_from} starts a language model from GPT-2 weights: use task=lm "
                           f"(data=text|pydoc|tinyshakespeare), task=rl env=text or task=reward_model")


def keep_tokenizer(cfg: DictConfig, state: dict, why: str, typed: dict[str, str]) -> None:
    """A typed data.tokenizer (or bpe data.vocab_size) other than the one the model uses: one line.
    Otherwise the config is set to it, so the recipe says which tokenizer the run used."""
    kind = state.get("kind")
    size = state.get("vocab_size") if kind == "bpe" else None
    asked = typed.get("data.tokenizer")
    if asked is not None and asked != kind:
        raise MimicryError(f"data.tokenizer={asked}: the model uses data.tokenizer={kind} ({why}); drop "
                           f"data.tokenizer={asked}, the model's tokenizer is reused")
    if size is not None and "data.vocab_size" in typed and typed["data.vocab_size"] != str(size):
        raise MimicryError(f"data.vocab_size={typed['data.vocab_size']}: the model's BPE tokenizer has {size} "
                           f"tokens ({why}); drop data.vocab_size")
    with read_write(cfg.data):
        cfg.data.tokenizer = kind
        if size is not None:
            cfg.data.vocab_size = size


def use_pretrained_model(cfg: DictConfig, settings: dict[str, Any], init_from: str, typed: dict[str, str]) -> None:
    """The model built as config.json says; a typed smaller model.block_size crops the positions
    (nanoGPT's crop_block_size), so that a long-context GPT-2 trains on short windows."""
    if cfg.model.get("_target_") != GPT:
        raise MimicryError(f"init_from={init_from} loads GPT-2 weights: it needs model=gpt")
    for key in ("n_layer", "n_head", "n_embd"):
        if f"model.{key}" in typed and typed[f"model.{key}"] != str(settings[key]):
            raise MimicryError(f"model.{key}={typed[f'model.{key}']}: init_from={init_from} has {key}="
                               f"{settings[key]}; drop model.{key}")
    block_size = settings["block_size"]
    if "model.block_size" in typed:
        block_size = int(cfg.model.block_size)
        if not 1 <= block_size <= settings["block_size"]:
            raise MimicryError(f"model.block_size={block_size}: init_from={init_from} has "
                               f"{settings['block_size']} positions; give at most that")
    with read_write(cfg.model):
        for key, value in {**settings, "block_size": block_size}.items():
            cfg.model[key] = value
