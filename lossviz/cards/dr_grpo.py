r"""Dr. GRPO: the PPO token loss summed over each answer and divided by one constant (Liu et al. 2025, §3.1).

The same two-answer batch as the ``grpo`` card (a 1-token and a 2-token answer, padded to T = 2),
reduced by ``seq-mean-token-sum-norm``: every token weighs 1/(B·C), C = ``loss_scale_factor``
(default: the padded length T), whatever the length of its answer. Dr. GRPO also drops the
std of the group advantage (see the ``group-advantages`` card).
"""

from __future__ import annotations

from .base import Param
from .controls import Hold, Window
from .figure import Shot
from .grpo import GRPO, lesson_figure


class DrGRPO(GRPO):
    name = "dr-grpo"
    aliases = ("drgrpo", "dr_grpo")
    family = "grpo"
    order = 2  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "Dr. GRPO: token sums over a constant"
    lesson = ("seq-mean-token-sum-norm: each token's loss is divided by one constant C (default the padded length), so a token "
              "weighs the same in a short and a long answer and long wrong answers are no longer penalised less per token")
    params = (
        Param("clip_eps", 0.2, "trust-region half-width ε", r"\varepsilon", low=0.0, high=1.0, low_open=True, high_open=True),
        Param("loss_scale_factor", None, "the constant C each token's loss is divided by (default: the padded length T)", "C",
              low=0.0, high=1e6, low_open=True, optional=True),
    )
    cases_doc = ""
    controls = (Hold("advantages_0", "A_short", -2.0, 2.0, "advantage of the 1-token answer"),
                Hold("advantages_1", "A_long", -2.0, 2.0, "advantage of the 2-token answer"),
                Window("clip_eps", 0.01, 0.9, 0.01), Window("loss_scale_factor", 1.0, 20.0, 1.0, on=2.0))
    figure = lesson_figure("dr-grpo")
    gallery = (Shot("dr-grpo", "Dr. GRPO: every token weighs 1/(B·C) whatever its answer's length, so inside the clip the two answers' "
                    "tokens get the same slope ∂L/∂r = -A/(B·C)"),)

    def mode(self, p) -> str:
        return "seq-mean-token-sum-norm"

    def scale(self, p):
        return p["loss_scale_factor"]
