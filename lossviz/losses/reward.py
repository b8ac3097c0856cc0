r"""Reward-model losses: pairwise (Bradley-Terry), its log-exp form, and the process reward model.

**PairWiseLoss / LogExpLoss.** With the reward gap :math:`\Delta = r_c - r_r` and an optional
margin :math:`m`:

.. math::

    \ell = -\log\sigma(\Delta - m) = \log\big(1 + e^{-(\Delta - m)}\big),
    \qquad
    \frac{\partial \ell}{\partial r_c} = -\frac{\partial \ell}{\partial r_r} = -\sigma(m - \Delta).

The margin shifts the curve: the gap at which the gradient fades moves from about 2 to
about :math:`2 + m`. The loss is the mean over pairs. ``LogExpLoss`` is the same function
written as :math:`\log(1 + e^{r_r - r_c})`; OpenRLHF v0.5.3 computes it literally, which overflows
(with :math:`\Delta = r_c - r_r`, ``exp(-Δ)`` is ``inf`` in float32 once :math:`\Delta < -88.7`, a pair
ranked wrongly by more than 88.7, and the gradients become ``NaN``) and ignores ``margin``.
lossviz computes both through ``logsigmoid``: finite at any gap, margin honoured. The margin
of ``LogExpLoss`` is a lossviz extension: with a margin it is no longer OpenRLHF's loss.

**PRMLoss.** Only positions where ``inputs == placeholder_token_id`` count. With reward
tokens :math:`(+, -)` the logits there are restricted to those two ids, a two-way softmax,
i.e. a logistic loss on :math:`d = z_+ - z_-`. A soft label :math:`p` (probability of the
first reward token) targets :math:`[p, 1-p]`:

.. math::

    \ell = -p\log\sigma(d) - (1-p)\log\sigma(-d),
    \qquad
    \frac{\partial \ell}{\partial z_+} = -\frac{\partial \ell}{\partial z_-} = \sigma(d) - p,

minimal at :math:`d^* = \log\frac{p}{1-p}`; a hard label is :math:`p \in \{0, 1\}`. Without
``reward_token_ids``, hard labels are token ids and the cross-entropy runs over the whole
vocabulary. The loss is the mean over counted positions (label ``-100`` ignored);
``acc`` is the fraction of counted positions whose argmax logit matches the label
(the argmax of :math:`[p, 1-p]` for soft labels; the tie :math:`p = 0.5` picks the first
reward token, as ``torch.argmax`` does).

lossviz hardening: soft labels of any floating dtype (OpenRLHF v0.5.3 needs float32); hard
labels are mapped to reward-token indices all at once (OpenRLHF v0.5.3's one-id-at-a-time
replacement corrupts labels when a reward id is itself a small index); a batch without a
placeholder, a label that is not a reward token, or a wrong ``reward_token_ids`` length
gives a ``ValueError``; positions labelled ``-100`` are left out of the mean and the
accuracy (an all-ignored batch gives loss 0 and accuracy 0, not NaN).
"""

from __future__ import annotations

from numbers import Integral
from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import IGNORE_INDEX, check_class_labels, check_floats, check_nonempty, check_same_shape, check_tensor, compute_dtype


def _margin_term(margin, like: torch.Tensor):
    """Validate ``margin``: None, a real number, or a floating tensor broadcastable to the rewards."""
    if margin is None:
        return 0.0
    if isinstance(margin, torch.Tensor):
        check_tensor("margin", margin)
        try:
            torch.broadcast_shapes(margin.shape, like.shape)
        except RuntimeError:
            raise ValueError(
                f"margin of shape {tuple(margin.shape)} does not broadcast to the rewards' shape {tuple(like.shape)}"
            ) from None
        return margin
    if isinstance(margin, (int, float)) and not isinstance(margin, bool):
        return float(margin)
    raise TypeError(f"margin must be None, a number or a floating tensor, got {type(margin).__name__}")


def _bradley_terry(chosen_reward: torch.Tensor, reject_reward: torch.Tensor, margin) -> torch.Tensor:
    check_floats(chosen_reward=chosen_reward, reject_reward=reject_reward)
    check_same_shape(chosen_reward=chosen_reward, reject_reward=reject_reward)
    check_nonempty("chosen_reward", chosen_reward)
    shift = _margin_term(margin, chosen_reward)
    return -F.logsigmoid(chosen_reward - reject_reward - shift).mean()


class PairWiseLoss(nn.Module):
    """Bradley-Terry reward-model loss ``-log sigmoid(chosen - reject - margin)``, mean over pairs."""

    def forward(self, chosen_reward: torch.Tensor, reject_reward: torch.Tensor, margin: torch.Tensor = None) -> torch.Tensor:
        return _bradley_terry(chosen_reward, reject_reward, margin)


class LogExpLoss(nn.Module):
    """The pairwise loss in its ``log(1 + exp(reject - chosen))`` form, computed without overflow.

    Without ``margin`` it is a drop-in for OpenRLHF v0.5.3's ``LogExpLoss``: the same values and
    gradients wherever the original is finite. With ``margin`` it is *not*: OpenRLHF's
    ``LogExpLoss`` accepts ``margin`` and ignores it, while lossviz computes
    ``log(1 + exp(reject - chosen + margin))``, which equals ``PairWiseLoss`` with that margin
    (a documented extension). To reproduce the original's numbers, leave ``margin`` out.
    """

    def forward(self, chosen_reward: torch.Tensor, reject_reward: torch.Tensor, margin: torch.Tensor = None) -> torch.Tensor:
        # log(1 + e^{-x}) is -logsigmoid(x): the identical function, evaluated stably
        return _bradley_terry(chosen_reward, reject_reward, margin)


class PRMLoss(nn.Module):
    """Process reward model loss at placeholder positions, with hard or soft step labels.

    Only steps whose placeholder is its own token count. A tokenizer that merges the
    placeholder with a neighbour (a BPE token such as ``"▁ки\\nStep"``) leaves that step no
    ``placeholder_token_id`` position, and it drops out of the loss without an error (only a
    batch that loses every step raises). Check the data once before training with
    :func:`lossviz.losses.check_placeholders` ``(tokenizer, texts, placeholder)``, which reports
    every such step.
    """

    def __init__(self, placeholder_token_id: int, reward_token_ids: Optional[List[int]] = None) -> None:
        super().__init__()
        if isinstance(placeholder_token_id, bool) or not isinstance(placeholder_token_id, Integral):
            raise TypeError(f"placeholder_token_id must be an int, got {placeholder_token_id!r}")
        if reward_token_ids is not None:
            ids = list(reward_token_ids)
            if any(isinstance(i, bool) or not isinstance(i, Integral) for i in ids):
                raise TypeError(f"reward_token_ids must be ints (token ids), got {reward_token_ids!r}")
            if any(i < 0 for i in ids):
                raise ValueError(f"reward_token_ids must be token ids >= 0, got {reward_token_ids!r}")
            if len(ids) < 2 or len(set(ids)) != len(ids):
                raise ValueError(f"reward_token_ids must hold at least 2 distinct token ids, got {reward_token_ids!r}")
            reward_token_ids = [int(i) for i in ids]
        self.IGNORE_INDEX = IGNORE_INDEX
        self.placeholder_token_id = int(placeholder_token_id)
        self.reward_token_ids = reward_token_ids

    def forward(
        self,
        inputs: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        return_acc: bool = False,
    ) -> Union[torch.Tensor, tuple]:
        check_tensor("inputs", inputs, floating=False)
        check_tensor("logits", logits)
        check_tensor("labels", labels, floating=False)
        if logits.shape[:-1] != inputs.shape or labels.shape != inputs.shape:
            raise ValueError(
                "inputs and labels must have the shape of logits without its vocabulary axis; got "
                f"inputs{tuple(inputs.shape)}, logits{tuple(logits.shape)}, labels{tuple(labels.shape)}"
            )
        vocab = logits.shape[-1]
        if self.reward_token_ids is not None and max(self.reward_token_ids) >= vocab:
            raise ValueError(f"reward_token_ids {self.reward_token_ids} must be < the vocabulary size {vocab}")
        placeholder = inputs == self.placeholder_token_id  # (B, T)
        if not bool(placeholder.any()):
            raise ValueError(
                f"inputs holds no placeholder_token_id={self.placeholder_token_id}: no step to score "
                "(did the tokenizer merge the placeholder with its neighbours?)"
            )
        step_logits = logits[placeholder].to(compute_dtype(logits))  # (K, V)
        step_labels = labels[placeholder]  # (K,)

        if labels.is_floating_point():
            loss, target, keep, step_logits = self._soft(step_logits, step_labels)
        else:
            loss, target, keep, step_logits = self._hard(step_logits, step_labels, vocab)
        if not return_acc:
            return loss
        hits = (step_logits.argmax(dim=-1) == target) & keep
        acc = hits.sum().to(step_logits.dtype) / keep.sum().clamp(min=1)
        return loss, acc

    def _soft(self, step_logits: torch.Tensor, step_labels: torch.Tensor):
        if self.reward_token_ids is None or len(self.reward_token_ids) != 2:
            raise ValueError(
                "reward_token_ids must hold exactly 2 token ids for soft (floating) labels, "
                f"got {self.reward_token_ids!r}"
            )
        keep = step_labels != self.IGNORE_INDEX  # (K,)
        p = step_labels.to(step_logits.dtype)
        if bool(((p < 0) | (p > 1))[keep].any()):
            raise ValueError("labels: soft labels must be probabilities in [0, 1] (or -100 to ignore)")
        pair_logits = step_logits[:, self.reward_token_ids]  # (K, 2)  [z+, z-]
        log_q = F.log_softmax(pair_logits, dim=-1)
        # cross-entropy to the targets [p, 1 - p]
        per_step = -(p * log_q[:, 0] + (1.0 - p) * log_q[:, 1])
        loss = torch.where(keep, per_step, 0.0).sum() / keep.sum().clamp(min=1)
        target = (p < 0.5).long()  # argmax of [p, 1 - p], ties to the first token
        return loss, target, keep, pair_logits

    def _hard(self, step_logits: torch.Tensor, step_labels: torch.Tensor, vocab: int):
        keep = step_labels != self.IGNORE_INDEX
        if self.reward_token_ids is None:
            check_class_labels("labels", step_labels, vocab)
            target = step_labels
        else:
            ids = torch.tensor(self.reward_token_ids, device=step_labels.device)
            match = step_labels.unsqueeze(-1) == ids  # (K, R)
            unknown = ~match.any(dim=-1) & keep
            if bool(unknown.any()):
                raise ValueError(
                    f"labels at placeholder positions must be one of reward_token_ids {self.reward_token_ids} "
                    f"or -100, got {int(step_labels[unknown][0])}"
                )
            # every id maps to its index at once
            target = torch.where(keep, match.long().argmax(dim=-1), self.IGNORE_INDEX)
            step_logits = step_logits[:, self.reward_token_ids]  # (K, R)
        nll = F.cross_entropy(step_logits, target, ignore_index=self.IGNORE_INDEX, reduction="sum")
        return nll / keep.sum().clamp(min=1), target, keep, step_logits
