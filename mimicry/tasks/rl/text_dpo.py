"""DPO on text (Rafailov et al. 2023): preferences imitated directly, with no reward model and no sampling.

A policy π defines an implicit reward, β · log π(y|x)/π_start(y|x), for which it is the best
KL-regularised policy. Plug that into the reward model's Bradley–Terry imitation and the RL problem
becomes a classification: the reference is which of the two continuations was preferred, the
prediction is β times the difference of their log-ratios against the frozen starting model, the
loss is the same cross-entropy the reward model uses. The purest "RL turned into imitation": the
loop reads a fixed preference file (data=preferences) and never generates text to learn from.
Evaluation is the RL-on-text one (the reward= on fixed prompts, the KL to the start), so DPO's
curves sit beside the online routes'.
"""
from __future__ import annotations

from typing import Any

import torch

from mimicry.data.preferences import as_texts, check_fits, response_mask
from mimicry.errors import MimicryError
from mimicry.losses.policy import token_logprob
from mimicry.tasks.preference_fit import PreferenceFit
from mimicry.tasks.rl.text import TextReinforcementTask


class TextDPO(PreferenceFit, TextReinforcementTask):
    algo_name = "dpo"
    learns_from_preferences = True
    step_is_env_steps = False  # no text is generated while learning: TensorBoard's x-axis is the update count

    def build_route(self) -> None:
        if self.data_spec.get("kind") != "preferences":
            raise MimicryError("algo=dpo imitates preferences: give data=preferences data.path=FILE (make one with "
                               "mimicry sample LM_RUN pairs=512 judge=sentence_length out=DIR)")
        beta = self.algo["beta"]
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise MimicryError(f"algo.beta={beta!r}: must be a number > 0 (the KL strength; DPO's paper: 0.1-0.5), "
                               f"e.g. algo.beta=0.1")
        check_fits(self.data_spec, self.gpt_block_size())

    # ---- the imitation --------------------------------------------------------------------------
    def log_ratios(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log π(continuation | prompt) − log π_start(continuation | prompt) of each text (2B,), in float32."""
        tokens, length, context = as_texts(batch)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        mask = response_mask(length, context, tokens.size(1))
        policy = token_logprob(self.gpt(inputs).float(), targets)
        with torch.no_grad():
            start = token_logprob(self.reference(inputs).float(), targets)
        return ((policy - start) * mask).sum(-1)

    def imitation(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reference = batch["preferred"]                               # 1 where the first text was preferred
        first, second = self.log_ratios(batch).view(-1, 2).unbind(1)
        prediction = self.algo["beta"] * (first - second)           # the implicit rewards' margin
        return prediction, reference

    def on_validation_epoch_end(self) -> None:
        self.log_evaluation()  # once per validation: the reward and KL on the fixed prompts

    # ---- the loop: passes over the preference file (trainer.max_epochs), not env steps --------------
    def finished(self) -> bool:
        return False  # the trainer stops after trainer.max_epochs passes

    def planned_updates(self) -> int | float:
        return self.trainer.estimated_stepping_batches

    def count_items(self, batch: dict[str, Any]) -> int:
        return int((batch["length"] - batch["context"]).sum())  # continuation tokens read
