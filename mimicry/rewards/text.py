"""Built-in rewards for RL on text. Each takes the generated continuations (without their
prompt) and returns one float per text; the options after ``texts`` come from conf/reward/.

Point ``reward._target_`` at your own function with the same shape to use it instead.
"""
from __future__ import annotations

import functools
import re

import torch

SENTENCE_END = re.compile(r"[.!?]")


def sentence_length(texts: list[str], target: int = 40, tolerance: int = 20) -> list[float]:
    """A first sentence of ``target`` characters that ends cleanly ('.', '!' or '?'): 1 at exactly
    ``target``, falling linearly to 0 at ``target ± tolerance``; 0 when no sentence ends."""
    scores = []
    for text in texts:
        end = SENTENCE_END.search(text)
        if end is None:
            scores.append(0.0)
            continue
        length = end.end()  # characters up to and including the sentence end
        scores.append(max(0.0, 1.0 - abs(length - target) / tolerance))
    return scores


def avoid_letter(texts: list[str], letter: str = "e") -> list[float]:
    """The share of letters that are not ``letter`` (either case): 1 for a text without it (a lipogram).
    A text without letters scores 0, so that saying nothing is not a way out."""
    scores = []
    for text in texts:
        letters = [ch for ch in text.lower() if ch.isalpha()]
        scores.append(1.0 - letters.count(letter.lower()) / len(letters) if letters else 0.0)
    return scores


def contains_words(texts: list[str], words: list[str] = ("love",)) -> list[float]:
    """The share of ``words`` that appear as whole words (any case): 1 when all of them do."""
    patterns = [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in words]
    return [sum(bool(p.search(text)) for p in patterns) / len(patterns) for text in texts]


def lm_likelihood(texts: list[str], run: str, per_char: bool = True) -> list[float]:
    """A score from another trained model: the log-likelihood of each text under the ``lm`` run at
    ``run`` (nats; per character when ``per_char``). The run is read as ``mimicry sample`` reads
    it (no code from the file runs) and kept in memory for the next call."""
    judge = _load_lm(str(run))
    scores = []
    with torch.no_grad():
        for text in texts:
            ids = judge.tokenizer.encode(text)[: judge.model.block_size + 1]
            if len(ids) < 2:
                scores.append(-10.0)  # too short to judge: as unlikely as random characters get
                continue
            logits = judge.model(ids[:-1].unsqueeze(0))[0]
            logprob = torch.log_softmax(logits, -1).gather(1, ids[1:].unsqueeze(1)).sum().item()
            scores.append(logprob / (len(ids) - 1) if per_char else logprob)
    return scores


@functools.lru_cache(maxsize=4)
def _load_lm(run: str):
    from mimicry.checkpoints import load_task
    from mimicry.errors import MimicryError

    task = load_task(run)
    # by the class's name, as checkpoints name it: rewards/ sits below tasks/ and does not import them
    if f"{type(task).__module__}.{type(task).__qualname__}" != "mimicry.tasks.lm.LanguageModeling":
        raise MimicryError(f"reward.run={run} is a {type(task).__name__} run; lm_likelihood needs an lm run")
    return task
