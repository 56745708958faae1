"""init_from=hf:DIR: a GPT-2 saved by transformers (a tiny one, built here; no download) becomes our
GPT with the same logits and the same tokenizer; `mimicry train task=lm` fine-tunes it, `mimicry sample`
decodes with its tokenizer, RL on text starts from it; a malformed or crafted folder fails in one line
and runs nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.data.bpe import BPETokenizer
from mimicry.data.text import pydoc_text
from mimicry.errors import MimicryError
from mimicry.models.gpt import GPT
from mimicry.models.hf_gpt2 import hf_folder, read_pretrained

transformers = pytest.importorskip("transformers")  # the dev extra: pip install -e '.[dev]'

CORPUS = pydoc_text()[:20_000]
CONFIG = {"vocab_size": 300, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2,
          "initializer_range": 0.2,  # large weights: a wrong mapping or a missed transpose shows in the logits
          "bos_token_id": None, "eos_token_id": None}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> tuple[Path, torch.nn.Module, object]:
    """(folder, GPT2LMHeadModel, its tokenizer): what save_pretrained writes for a 2-layer GPT-2."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).eval()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=BPETokenizer.train(CORPUS, 300).tokenizer)
    model.save_pretrained(folder)  # config.json + model.safetensors
    tokenizer.save_pretrained(folder)  # tokenizer.json
    return folder, model, tokenizer


def copy_of(folder: Path, into: Path) -> Path:
    return Path(shutil.copytree(folder, into / "copy"))


def test_our_gpt_gives_transformers_logits_and_tokens(tiny_gpt2):
    folder, model, tokenizer = tiny_gpt2
    pretrained = read_pretrained(f"hf:{folder}")
    assert pretrained.settings["activation"] == "gelu_tanh" and pretrained.vocab_size == 300
    gpt = GPT(vocab_size=pretrained.vocab_size, **pretrained.settings).eval()
    gpt.load_state_dict(pretrained.weights())
    ours = BPETokenizer.from_json(json.dumps(json.loads(pretrained.tokenizer["json"])), "state")
    text = CORPUS[1000:1400]
    ids = torch.tensor(tokenizer(text)["input_ids"][:64])
    assert ours.encode(text)[:64].tolist() == ids.tolist() and ours.decode(ids) == tokenizer.decode(ids)
    with torch.no_grad():
        theirs, mine = model(ids[None]).logits, gpt(ids[None])
    assert theirs.abs().max() > 1  # logits far from zero, so the tolerance below means something
    assert (theirs - mine).abs().max() < 1e-4
    # cropped to 16 positions (nanoGPT's crop_block_size): the same logits on a short window
    short = GPT(vocab_size=300, **{**pretrained.settings, "block_size": 16}).eval()
    short.load_state_dict(pretrained.weights(16))
    with torch.no_grad():
        assert (short(ids[None, :16]) - theirs[:, :16]).abs().max() < 1e-4


def test_gpt2_vocab_and_merges_files_serve_when_there_is_no_tokenizer_json(tiny_gpt2, tmp_path):
    folder, _, tokenizer = tiny_gpt2
    copy = copy_of(folder, tmp_path)
    (copy / "tokenizer.json").unlink()
    BPETokenizer.from_json((folder / "tokenizer.json").read_text(), "t").tokenizer.model.save(str(copy))
    state = read_pretrained(f"hf:{copy}").tokenizer
    from mimicry.data.tokenizers import tokenizer_from_state
    assert tokenizer_from_state(state).encode(CORPUS[:300]).tolist() == tokenizer(CORPUS[:300])["input_ids"]


def malformed(copy: Path, what: str) -> None:
    config = json.loads((copy / "config.json").read_text())
    if what == "no config":
        (copy / "config.json").unlink()
    elif what == "config not json":
        (copy / "config.json").write_text("{'n_layer': 2")
    elif what == "llama":
        (copy / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    elif what == "heads":
        (copy / "config.json").write_text(json.dumps({**config, "n_head": 3}))
    elif what == "more layers than weights":
        (copy / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    elif what == "no weights":
        (copy / "model.safetensors").unlink()
    elif what == "truncated weights":
        (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:500])
    elif what == "no tokenizer":
        (copy / "tokenizer.json").unlink()
    elif what == "tokenizer too big":
        (copy / "config.json").write_text(json.dumps({**config, "vocab_size": 200}))


@pytest.mark.parametrize("what, message", [
    ("no config", "config.json not found"), ("config not json", "damaged: not JSON"),
    ("llama", "model_type='llama'"), ("heads", "not divisible by n_head=3"),
    ("more layers than weights", "not the GPT-2 its config.json describes"),
    ("no weights", "has no weights"), ("truncated weights", "model.safetensors is damaged"),
    ("no tokenizer", "has no tokenizer"), ("tokenizer too big", "tokenizer of 300 tokens cannot serve a model of 200"),
])
def test_a_malformed_folder_is_one_line(tiny_gpt2, tmp_path, what, message):
    copy = copy_of(tiny_gpt2[0], tmp_path)
    malformed(copy, what)
    with pytest.raises(MimicryError, match=message) as error:
        read_pretrained(f"hf:{copy}").weights()
    assert "\n" not in str(error.value)


def test_a_hub_name_without_network_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as here: no network (and no cached copy of the name)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent/mimicry-test-hub-cache")
    with pytest.raises(MimicryError) as error:
        hf_folder("hf:gpt2")
    assert "\n" not in str(error.value)
    assert "needs the network" in str(error.value) and "hf download gpt2 --local-dir DIR" in str(error.value)
    with pytest.raises(MimicryError, match="no such folder"):
        hf_folder("hf:./not/here")


class RunsCode:
    """A pickle that would call a function when unpickled: what weights_only=True refuses."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_folder_runs_no_code(tiny_gpt2, tmp_path):
    copy = copy_of(tiny_gpt2[0], tmp_path)
    marker = tmp_path / "code-ran"
    # weights as a pickle that runs code, custom model code beside them, and a config that points at it
    (copy / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": torch.zeros(300, 32), "payload": RunsCode(marker)}, copy / "pytorch_model.bin")
    (copy / "modeling_evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    with pytest.raises(MimicryError, match="pytorch_model.bin is damaged or holds more than tensors"):
        read_pretrained(f"hf:{copy}").weights()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_evil.GPT"}}))
    result = run_mimicry(tmp_path, "train", "task=lm", f"init_from=hf:{copy}", "trainer.max_epochs=1", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "asks for custom model code (auto_map)" in output and "never runs code" in output
    assert not marker.exists()
    # a pickled .bin of plain tensors is read (weights_only=True), with the settings of config.json
    torch.save(tiny_gpt2[1].state_dict(), copy / "pytorch_model.bin")
    (copy / "config.json").write_text(json.dumps(config))
    assert read_pretrained(f"hf:{copy}").weights()["blocks.1.mlp.2.weight"].shape == (32, 128)
    assert not marker.exists()


def test_lm_fine_tunes_from_hf_samples_with_its_tokenizer_and_rl_starts_from_it(tiny_gpt2, tmp_path):
    folder, model, tokenizer = tiny_gpt2
    data = tmp_path / "corpus.txt"
    data.write_text(CORPUS, encoding="utf-8")
    args = ["task=lm", f"init_from=hf:{folder}", "data=text", f"data.path={data}", "model.block_size=32",
            "data.batch_size=8", "data.steps_per_epoch=5", "data.val_batches=2", "trainer.max_epochs=1",
            "task.sample_every_n_steps=5", "task.sample_tokens=20", "optim.warmup_steps=2", "optim.lr=1e-3"]
    run_mimicry(tmp_path, "train", *args)
    (run_dir,) = run_dirs(tmp_path)
    record = summary(run_dir)
    assert record["status"] == "completed" and record["metrics"]["val/bits_per_byte"] > 0
    task = load_task(run_dir)
    assert task.tokenizer.kind == "bpe" and task.model.block_size == 32
    assert task.tokenizer.encode(CORPUS[:200]).tolist() == tokenizer(CORPUS[:200])["input_ids"]
    # the weights came from the folder: 5 small steps leave them close to GPT-2's (initialised with std 0.2)
    wte = model.transformer.wte.weight.detach()
    assert (task.model.token_embedding.weight.detach() - wte).abs().max() < 0.05 < wte.abs().max()
    # a data.tokenizer other than the folder's is refused in one line
    refused = run_mimicry(tmp_path, "train", *args, "data.tokenizer=char", check=False)
    assert refused.returncode != 0 and "data.tokenizer=char: the model uses data.tokenizer=bpe" in refused.stdout + refused.stderr

    sampled = run_mimicry(tmp_path, "sample", str(run_dir), "n=1", "prompt=The ", "length=12", f"out={tmp_path / 's'}")
    (written,) = (tmp_path / "s").glob("*.txt")
    text = written.read_text(encoding="utf-8")
    assert text.startswith("The ") and len(text) > len("The "), sampled.stdout

    # RL on text starts from the same folder: the policy's KL to its start is zero before any update
    rl = ["task=rl", "env=text", "algo=ppo", f"init_from=hf:{folder}", "env.prompts=[The]", "env.max_new_tokens=6",
          "reward=contains_words", "reward.words=[the]", "algo.num_envs=8", "algo.batch_size=24",
          "algo.update_epochs=1", "task.total_env_steps=48", "task.eval_every_env_steps=48", "task.eval_episodes=4"]
    rl_dir = tmp_path / "rl"
    rl_dir.mkdir()
    run_mimicry(rl_dir, "train", *rl)
    (rl_run,) = run_dirs(rl_dir)
    assert summary(rl_run)["status"] == "completed"
    assert summary(rl_run)["metrics"]["rollout/generated_tokens"] == 48
    # its checkpoint carries the folder's settings and tokenizer: sampling needs neither the folder nor transformers
    moved = shutil.move(folder, tmp_path / "moved")
    try:
        (written,) = load_task(rl_run).generate_samples(tmp_path, n=2, seed=0)
    finally:
        shutil.move(moved, folder)
    assert written.read_text(encoding="utf-8").count("[reward ") == 2 and "The" in written.read_text(encoding="utf-8")
