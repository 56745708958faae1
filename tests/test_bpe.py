"""data.tokenizer=bpe: byte-level BPE round trips any text, is cached beside the data (a damaged
cache is rebuilt, never run), travels in the checkpoint so sampling decodes the same way, and a
run that continues it with another tokenizer is refused in one line. Bits per byte puts char,
byte and BPE runs on one axis."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_LM, run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.data.bpe import BPETokenizer, cache_path, cached_bpe
from mimicry.data.text import pydoc_text
from mimicry.data.tokenizers import ByteTokenizer, CharTokenizer, build_tokenizer, tokenizer_from_state
from mimicry.errors import MimicryError
from mimicry.tasks.lm import LanguageModeling

# validation_step is called without a Trainer below, where self.log only warns
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

CORPUS = pydoc_text()[:30_000]
ODD = "naïve café — 日本 🙂 ${not.an.interpolation} \t\n\n  end"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, 400)


def test_bpe_round_trips_any_text_and_its_state_is_plain_data(bpe):
    assert bpe.vocab_size == 400
    for text in (CORPUS[:2000], ODD):
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert int(bpe.byte_lengths()[ids].sum()) == len(text.encode("utf-8"))  # each id's bytes, exactly
    assert len(bpe.encode(CORPUS)) < 0.6 * len(CORPUS)  # merges were learned: fewer tokens than characters
    state = bpe.state()
    assert set(state) == {"kind", "json", "vocab_size"} and isinstance(state["json"], str)
    assert "$" not in state["json"]  # no "${" that a config or a checkpoint's check would take for an interpolation
    again = tokenizer_from_state(state)
    assert again.encode(ODD).tolist() == bpe.encode(ODD).tolist() and again.decode(bpe.encode(ODD)) == ODD


@pytest.mark.parametrize("state", [{"kind": "bpe", "json": "{not json", "vocab_size": 300},
                                   {"kind": "bpe", "json": '{"model": {"type": "os.system"}}', "vocab_size": 300},
                                   {"kind": "bpe", "vocab_size": 300}, {"kind": "bpe", "json": "{}", "vocab_size": "x"}])
def test_a_damaged_bpe_state_is_one_line(state):
    with pytest.raises(MimicryError, match="BPE tokenizer") as error:
        tokenizer_from_state(state)
    assert "\n" not in str(error.value)


def test_vocab_size_must_leave_room_for_merges_and_a_short_text_says_how_many_it_gives(caplog):
    with pytest.raises(MimicryError, match="data.vocab_size=256: .*starts from the 256 byte values"):
        build_tokenizer("bpe", CORPUS, 256)
    with caplog.at_level(logging.WARNING):
        small = build_tokenizer("bpe", "abc abd " * 50, 5000)
    assert small.vocab_size < 300 and f"this text gives only {small.vocab_size} BPE tokens" in caplog.text
    assert small.decode(small.encode("abc abd xyz")) == "abc abd xyz"


def test_the_cache_is_file_safe_reused_and_a_damaged_one_rebuilt(tmp_path, monkeypatch, caplog):
    data_file = tmp_path / "my data (v2)?.txt"
    path = cache_path(CORPUS, 300, data_file.name, data_file, None)
    assert path.parent == tmp_path and path.name.startswith("my_data_v2_.txt.bpe-300-")
    assert cache_path(CORPUS + "x", 300, data_file.name, data_file, None) != path  # other text, other file
    first = cached_bpe(CORPUS, 300, path)
    assert path.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache was there")

    with monkeypatch.context() as patch:
        patch.setattr(BPETokenizer, "train", no_training)
        assert cached_bpe(CORPUS, 300, path).encode(ODD).tolist() == first.encode(ODD).tolist()

    path.write_text('{"model": {"type": "BPE", "vocab": ', encoding="utf-8")  # a truncated file
    with caplog.at_level(logging.WARNING):
        rebuilt = cached_bpe(CORPUS, 300, path)
    assert "is damaged" in caplog.text and "training it again" in caplog.text
    assert rebuilt.encode(ODD).tolist() == first.encode(ODD).tolist()
    assert BPETokenizer.from_json(path.read_text(encoding="utf-8"), str(path)).vocab_size == 300  # rewritten whole


def test_bits_per_byte_counts_the_bytes_each_token_spells():
    """Two-byte characters: bits per byte is the summed nats over ln 2 over the UTF-8 bytes, not per character."""
    text = "héllo wörld, ça va? " * 4
    tokenizer = CharTokenizer.fit(text)
    spec = {"kind": "text", "dataset": "t", "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.state()}
    model = {"_target_": "mimicry.models.gpt.GPT", "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    task = LanguageModeling(model=model, loss={"_target_": "mimicry.losses.sequence.NextTokenCrossEntropy"},
                            optim={"lr": 1e-3}, data_spec=spec).eval()
    tokens = tokenizer.encode(text)[:34].view(2, 17)
    with torch.no_grad():
        task.validation_step(tokens, 0)
        nats = F.cross_entropy(task.model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum")
    spelled = len(tokenizer.decode(tokens[:, 1:].flatten()).encode("utf-8"))
    assert spelled > tokens[:, 1:].numel()  # some characters are two bytes
    assert float(task.val_bytes.compute()) == spelled
    assert float(task.val_nats.compute()) / math.log(2) / spelled == pytest.approx(float(nats) / math.log(2) / spelled,
                                                                                  rel=1e-5)
    assert ByteTokenizer().byte_lengths().tolist() == [1] * 256


def test_a_bpe_run_samples_text_is_cached_beside_its_data_and_keeps_its_tokenizer(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text(CORPUS, encoding="utf-8")
    args = [*TINY_LM, "data=text", f"data.path={data}", "data.tokenizer=bpe", "data.vocab_size=320"]
    run_mimicry(tmp_path, "train", *args)
    (run_dir,) = run_dirs(tmp_path)
    metrics = summary(run_dir)["metrics"]
    # bits per token over bytes per token: a BPE token spells more than one byte
    assert 0 < metrics["val/bits_per_byte"] < metrics["val/bits_per_char"] / 1.3
    (cache,) = tmp_path.glob("corpus.txt.bpe-320-*.json")

    # beside a char run on the same text, compare puts both on bits per byte first (nats per token differ in kind)
    char_dir = tmp_path / "char"
    char_dir.mkdir()
    run_mimicry(char_dir, "train", *TINY_LM, "data=text", f"data.path={data}")
    table = run_mimicry(tmp_path, "compare", str(run_dir), str(run_dirs(char_dir)[0])).stdout
    assert "val/bits_per_byte" in table and table.index("val/bits_per_byte") < table.index("val/loss")
    assert "data.tokenizer" in table

    # sampling: the checkpoint's tokenizer, with the data and its cache gone
    data.unlink(), cache.unlink()
    task = load_task(run_dir)
    assert task.tokenizer.kind == "bpe" and task.tokenizer.vocab_size == 320
    (written,) = task.generate_samples(tmp_path, n=1, seed=0, prompt="The ", length=20)
    text = written.read_text(encoding="utf-8")
    assert text.startswith("The ") and len(text) > len("The ") + 10

    # fine-tuning or resuming with another tokenizer: one line; without one, the run's tokenizer is kept
    data.write_text(CORPUS, encoding="utf-8")
    refused = run_mimicry(tmp_path, "train", *TINY_LM, "data=text", f"data.path={data}", f"init_from={run_dir}",
                          "data.tokenizer=char", check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in output
    assert "data.tokenizer=char: the model uses data.tokenizer=bpe (init_from=" in output
    refused = run_mimicry(tmp_path, "train", f"resume={run_dir}", f"data.path={data}", "data.tokenizer=byte",
                          "trainer.max_epochs=3", check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "error:" in line]
    assert "data.tokenizer=byte: the model uses data.tokenizer=bpe (this run was trained with it" in line
