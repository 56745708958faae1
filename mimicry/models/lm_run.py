"""The GPT of a trained ``lm`` run (or of ``hf:DIR``), read as data: what every task that starts from a
language model builds on (RL on text, DPO, the reward model). Its settings and tokenizer come back as
plain values, its weights as tensors by name; nothing in the run folder is imported or run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mimicry.checkpoints import checkpoint_task_name, find_checkpoint, read_checkpoint, read_derived, saved_config
from mimicry.errors import MimicryError
from mimicry.models.hf_gpt2 import is_hf, read_pretrained
from mimicry.recipe import as_plain

LM_TASK = "mimicry.tasks.lm.LanguageModeling"


def read_lm_run(init_from: str | None, purpose: str = "RL on text") -> dict[str, Any]:
    """The lm run's GPT settings and tokenizer, as plain values. ``purpose`` names the caller in messages."""
    if not init_from:
        raise MimicryError(f"{purpose} fine-tunes a trained language model: give init_from=LM_RUN_DIR "
                           "(a run of task=lm, e.g. mimicry train experiment=lm_baby_gpt) or init_from=hf:DIR")
    if is_hf(init_from):  # pretrained GPT-2 weights: settings and tokenizer from its folder
        pretrained = read_pretrained(init_from)
        return {"model": pretrained.settings, "tokenizer": pretrained.tokenizer, "vocab_size": pretrained.vocab_size,
                "run": init_from}
    path = find_checkpoint(init_from)
    checkpoint = read_checkpoint(path)
    if checkpoint_task_name(checkpoint) != LM_TASK:
        raise MimicryError(f"init_from={init_from} is a {checkpoint_task_name(checkpoint).rsplit('.', 1)[-1]} run; "
                           f"{purpose} starts from a run of task=lm")
    model = as_plain(saved_config(checkpoint, str(path)).model)  # the installed GPT config + the run's values
    if model.pop("_target_", None) != "mimicry.models.gpt.GPT":
        raise MimicryError(f"init_from={init_from}: its model is not mimicry's GPT; {purpose} needs model=gpt")
    spec = read_derived(checkpoint, str(path))["data_spec"]
    return {"model": model, "tokenizer": spec["tokenizer"], "vocab_size": int(spec["vocab_size"]), "run": str(path)}


def lm_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The GPT weights of an lm run's checkpoint (its task keeps them under ``model.``), or of hf:DIR."""
    if is_hf(str(path)):
        return read_pretrained(str(path)).weights()
    checkpoint = read_checkpoint(find_checkpoint(path))
    return {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
