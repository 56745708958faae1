"""Pretrained GPT-2-family weights from a Hugging Face folder, for ``init_from=hf:DIR``.

The folder is read as data, as nanoGPT's ``from_pretrained`` reads it: config.json as plain JSON
values (checked), the weights as tensors (model.safetensors, or pytorch_model.bin with
``weights_only=True``), the tokenizer with ``tokenizers`` (tokenizer.json, or vocab.json + merges.txt).
Nothing the folder names is imported or run: no ``transformers``, no ``auto_map``, no remote code.
A hub name (``hf:gpt2``) is fetched with ``huggingface_hub`` where it is installed and the network allows.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mimicry.data.bpe import BPETokenizer
from mimicry.errors import MimicryError

PREFIX = "hf:"
#: config.json's activation → GPT's: GPT-2's "gelu_new" is the tanh approximation of GELU
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
#: settings of GPT2Config that change the computation in ways mimicry's GPT does not follow
UNSUPPORTED = {"scale_attn_by_inverse_layer_idx": True, "reorder_and_upcast_attn": True, "add_cross_attention": True,
               "scale_attn_weights": False}
HUB_FILES = ["config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"]
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?")


@dataclass(frozen=True)
class PretrainedGPT:
    """What ``init_from=hf:...`` starts from: GPT settings, the tokenizer's state, where it came from."""
    folder: Path
    settings: dict[str, Any]     # GPT(**settings) minus vocab_size and dropout
    vocab_size: int
    tokenizer: dict[str, Any]    # BPETokenizer.state()

    def weights(self, block_size: int | None = None) -> dict[str, torch.Tensor]:
        return gpt_weights(self.folder, self.settings, self.vocab_size, block_size)


def is_hf(init_from: Any) -> bool:
    return isinstance(init_from, str) and init_from.startswith(PREFIX)


def read_pretrained(init_from: str) -> PretrainedGPT:
    """The settings and tokenizer of ``hf:DIR`` (the weights are read when they are loaded)."""
    folder = hf_folder(init_from)
    settings, vocab_size = gpt2_settings(folder)
    tokenizer = folder_tokenizer(folder, vocab_size)
    return PretrainedGPT(folder, settings, vocab_size, tokenizer.state())


def hf_folder(init_from: str) -> Path:
    """A local folder (a path the user typed), else a hub name fetched to the local hub cache."""
    name = init_from[len(PREFIX):]
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if not _HUB_NAME.fullmatch(name) or folder.exists() or name.startswith(("./", "../", "~")):
        raise MimicryError(f"init_from={init_from}: no such folder; give a folder holding a GPT-2 checkpoint "
                           f"(config.json, model.safetensors, tokenizer.json), e.g. init_from=hf:/models/gpt2")
    offline = (f"init_from={init_from}: {name} is not a local folder, and fetching it from the Hugging Face hub "
               f"needs the network; where there is one, download it (hf download {name} --local-dir DIR, "
               f"with pip install 'mimicry[hf]') and give init_from=hf:DIR")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MimicryError(offline) from None
    try:  # data files only: no code is fetched, so none could be run
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as error:  # offline, unknown name, no permission: the hub client's kind of failure
        raise MimicryError(f"{offline} ({type(error).__name__})") from None


# ---- config.json -----------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    if not path.is_file():
        raise MimicryError(f"{path} not found: a Hugging Face GPT-2 folder holds config.json, model.safetensors "
                           f"and tokenizer.json (as save_pretrained writes them)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise MimicryError(f"{path} is damaged: not JSON ({str(error)[:80]})") from None


def gpt2_settings(folder: Path) -> tuple[dict[str, Any], int]:
    """GPT settings from config.json, each a checked plain value; (settings, vocab_size)."""
    path = folder / "config.json"
    config = read_json(path)
    if not isinstance(config, dict):
        raise MimicryError(f"{path} is damaged: it must hold a JSON object of settings")
    if "auto_map" in config or config.get("trust_remote_code"):
        raise MimicryError(f"{path} asks for custom model code (auto_map); mimicry reads standard GPT-2 "
                           f"checkpoints only and never runs code from a folder")
    if config.get("model_type") != "gpt2":
        raise MimicryError(f"{path}: model_type={config.get('model_type')!r}; init_from=hf: reads the GPT-2 family "
                           f"(model_type gpt2: gpt2, distilgpt2, gpt2-medium, ...)")

    def whole(key: str, *fallbacks: str) -> int:
        value = next((config[k] for k in (key, *fallbacks) if k in config), None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MimicryError(f"{path}: {key}={value!r} must be a whole number ≥ 1")
        return value

    n_layer, n_head, n_embd = whole("n_layer"), whole("n_head"), whole("n_embd")
    block_size, vocab_size = whole("n_positions", "n_ctx"), whole("vocab_size")
    if n_embd % n_head:
        raise MimicryError(f"{path}: n_embd={n_embd} is not divisible by n_head={n_head}")
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise MimicryError(f"{path}: activation_function={activation!r} is not one mimicry's GPT has "
                           f"({', '.join(ACTIVATIONS)})")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise MimicryError(f"{path}: layer_norm_epsilon={eps!r} must be a small positive number")
    if config.get("n_inner") not in (None, 4 * n_embd):
        raise MimicryError(f"{path}: n_inner={config['n_inner']!r}; mimicry's GPT has an MLP of 4 × n_embd")
    if config.get("tie_word_embeddings", True) is not True:
        raise MimicryError(f"{path}: tie_word_embeddings is off; mimicry's GPT ties its input and output embeddings")
    for key, value in UNSUPPORTED.items():
        if config.get(key, not value) == value:
            raise MimicryError(f"{path}: {key}={value} changes the attention in a way mimicry's GPT does not follow")
    settings = {"block_size": block_size, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "bias": True,
                "activation": ACTIVATIONS[activation], "norm_eps": float(eps)}
    return settings, vocab_size


# ---- the tokenizer ---------------------------------------------------------------------------------------
def folder_tokenizer(folder: Path, vocab_size: int) -> BPETokenizer:
    """tokenizer.json, else GPT-2's vocab.json + merges.txt as a byte-level BPE."""
    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise MimicryError(f"{path} is damaged ({type(error).__name__})") from None
        tokenizer = BPETokenizer.from_json(text, str(path), vocab_size)
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        try:
            model = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
        except Exception as error:
            raise MimicryError(f"{folder}: vocab.json or merges.txt is damaged ({' '.join(str(error).split())[:80]})"
                               ) from None
        inner = Tokenizer(model)
        inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        inner.decoder = decoders.ByteLevel()
        tokenizer = BPETokenizer(inner, vocab_size)
    else:
        raise MimicryError(f"{folder} has no tokenizer: it needs tokenizer.json, or vocab.json and merges.txt")
    return tokenizer


# ---- the weights -----------------------------------------------------------------------------------------
def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (tensors only, by format), else pytorch_model.bin with weights_only=True."""
    safetensors, binary = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors.is_file():
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(safetensors))
        except Exception as error:  # truncated, a bad header, not a safetensors file at all
            raise MimicryError(f"{safetensors} is damaged ({' '.join(str(error).split())[:100]}); download it again"
                               ) from None
    elif binary.is_file():
        try:
            tensors = torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, or a pickle that asks for code
            raise MimicryError(f"{binary} is damaged or holds more than tensors ({type(error).__name__})") from None
    else:
        raise MimicryError(f"{folder} has no weights: it needs model.safetensors or pytorch_model.bin "
                           f"(sharded checkpoints are not read)")
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        raise MimicryError(f"{folder}: its weights are not tensors by name")
    return tensors


def gpt_weights(folder: Path, settings: dict[str, Any], vocab_size: int,
                block_size: int | None = None) -> dict[str, torch.Tensor]:
    """The folder's GPT-2 weights under mimicry's GPT names, checked against config.json's shapes.

    GPT-2 stores its linear layers as Conv1D, (in, out): transposed for nn.Linear. ``block_size``
    below n_positions keeps the first position embeddings (nanoGPT's crop_block_size)."""
    tensors = {k.removeprefix("transformer."): v for k, v in read_tensors(folder).items()
               if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # causal masks, not weights
    C, n_positions = settings["n_embd"], settings["block_size"]
    block_size = n_positions if block_size is None else block_size
    if not 1 <= block_size <= n_positions:
        raise MimicryError(f"model.block_size={block_size}: this GPT-2 has {n_positions} positions; give at most that")
    names = {"wte.weight": ("token_embedding.weight", (vocab_size, C), False),
             "wpe.weight": ("position_embedding.weight", (n_positions, C), False),
             "ln_f.weight": ("ln_f.weight", (C,), False), "ln_f.bias": ("ln_f.bias", (C,), False)}
    for i in range(settings["n_layer"]):
        for ours, theirs, shape, transpose in (
                ("ln_1", "ln_1", (C,), False), ("ln_2", "ln_2", (C,), False),
                ("attn.qkv", "attn.c_attn", (C, 3 * C), True), ("attn.proj", "attn.c_proj", (C, C), True),
                ("mlp.0", "mlp.c_fc", (C, 4 * C), True), ("mlp.2", "mlp.c_proj", (4 * C, C), True)):
            names[f"h.{i}.{theirs}.weight"] = (f"blocks.{i}.{ours}.weight", shape, transpose)
            names[f"h.{i}.{theirs}.bias"] = (f"blocks.{i}.{ours}.bias", (shape[-1],), False)
    missing = [k for k in names if k not in tensors]
    unexpected = [k for k in tensors if k not in names and k != "lm_head.weight"]
    if missing or unexpected:
        raise MimicryError(f"{folder}: not the GPT-2 its config.json describes (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    state = {}
    for theirs, (ours, shape, transpose) in names.items():
        tensor = tensors[theirs]
        if tuple(tensor.shape) != shape:
            raise MimicryError(f"{folder}: {theirs} has shape {tuple(tensor.shape)}, config.json says {shape}")
        state[ours] = (tensor.t() if transpose else tensor).float().contiguous()
    head = tensors.get("lm_head.weight")
    if head is not None and not torch.equal(head, tensors["wte.weight"]):
        raise MimicryError(f"{folder}: lm_head.weight differs from wte.weight; mimicry's GPT ties them")
    state["position_embedding.weight"] = state["position_embedding.weight"][:block_size].clone()
    state["lm_head.weight"] = state["token_embedding.weight"]  # tied, as GPT-2's
    return state
