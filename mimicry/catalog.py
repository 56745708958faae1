"""``mimicry list``: every option of every config group, one line each, and what goes with what.

It reads the shipped config tree, so it always tells the truth about what `mimicry train` accepts.
"""
from __future__ import annotations

from importlib.resources import files

import yaml

GROUPS = ("task", "model", "loss", "data", "tokenizer", "algo", "env", "reward", "trainer", "logger", "callbacks",
          "experiment", "hparams_search")


def describe(text: str) -> str:
    """The first comment line that is not a Hydra directive."""
    for line in text.splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def options(group: str) -> dict[str, str]:
    folder = files("mimicry.conf") / group
    if not folder.is_dir():
        return {}
    return {entry.name[:-5]: entry.read_text() for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".yaml")}


def print_catalog() -> int:
    for group in GROUPS:
        found = options(group)
        if not found:
            continue
        print(f"{group}:")
        for name, text in found.items():
            print(f"  {name:<18} {describe(text)}")
            if group == "task":
                accepts = (yaml.safe_load(text) or {}).get("accepts") or {}
                for kind, allowed in accepts.items():
                    print(f"  {'':<18}   {kind}: {', '.join(allowed)}")
        print()
    print("Choose with group=option, e.g. `mimicry train task=lm data=tinyshakespeare trainer=gpu`.")
    print("Text runs (task=lm, task=rl env=text) start from init_from=RUN_DIR (a trained lm run) or "
          "init_from=hf:DIR (a local Hugging Face GPT-2 folder, with its tokenizer).")
    print("Preferences: mimicry sample LM_RUN pairs=N judge=REWARD [judge.temperature=0.1] out=DIR writes pairs; "
          "train on them with task=reward_model (then reward=model reward.from_run=RM_RUN) or "
          "task=rl env=text algo=dpo, both with data=preferences data.path=FILE.")
    print("Two stages start from a trained autoencoder run (task=autoencoder): task=image_ar tokenizer=vq "
          "tokenizer.from_run=AE_RUN (model=vqvae codes), task=diffusion latent.from_run=AE_RUN "
          "(model=kl_autoencoder latents; model=unet_latent).")
    return 0
