"""The cells of notebook 10, the preference zoo (written to .ipynb by make_notebooks.py).

DPO's successors on one axis (the production ``DPOLoss(loss_type=...)`` on a real batch), where each
stops when trained (the ``deterministic-preferences`` scenario), what label noise does to each
(``noisy-labels``), the positive terms against likelihood displacement and the length effect that
motivates SimPO and LN-DPO (``length``). Answers follow the convention of make_notebooks.py:
``answer_N = ...  # what to compute`` and a later ``check("zoo-N", answer_N)``; the solutions are
registered in lossviz/exercises.py.
"""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_markdown_cell

REFS = "../docs/references.md"


def _claim(name: str) -> str:
    from lossviz.dynamics import get

    s = get(name)
    return f"**Policy.** {s.policy}.  \n**Data.** {s.data}.\n\n**Claim.** {s.claim}\n\n**Source.** {s.source}."


def cells() -> list:
    return [
        new_markdown_cell(f"""# 10 · The preference zoo: DPO's successors side by side

**Notation.** For a pair (y_c ≻ y_r) the log-ratios are ρ_c = log π(y_c) − log π_ref(y_c) and
ρ_r = log π(y_r) − log π_ref(y_r) (sequence log-probs, sums over tokens); the margin is h = ρ_c − ρ_r,
and βh is the implicit-reward margin of DPO. The **push** on log π(y_c) is −∂ℓ/∂log π(y_c): how hard
gradient descent raises the chosen response (negative: it lowers it).

TRL names a dozen losses through `loss_type`; `lossviz.losses.DPOLoss` takes the same names:

| `loss_type` | loss of one pair | paper |
|---|---|---|
| `sigmoid` (DPO) | −log σ(βh) | Rafailov et al. 2023 |
| `ipo` | (h − 1/(2β))² | Azar et al. 2024 |
| `robust` (rDPO) | [−(1−ε) log σ(βh) + ε log σ(−βh)]/(1−2ε) | Chowdhury et al. 2024 (2403.00409) |
| `hinge` | max(0, 1 − βh) | SLiC, Zhao et al. 2023 |
| `exo_pair` | KL([σ(βh), σ(−βh)] ‖ [1−ε, ε]) | Ji et al. 2024 (2402.00856) |
| `nca_pair` | −log σ(βρ_c) − ½ log σ(−βρ_c) − ½ log σ(−βρ_r) | Chen et al. 2024 (2402.05369) |
| `bco_pair` | −log σ(βρ_c) − log σ(−βρ_r) | Jung et al. 2024 (2404.04656) |
| `sppo_hard` | (ρ_c − 1/(2β))² + (ρ_r + 1/(2β))² | Wu et al. 2024 (2405.00675) |
| `apo_zero` | (1 − σ(βρ_c)) + σ(βρ_r) | D'Oosterlinck et al. 2024 (2408.06266) |
| `discopop` | (1 − w)(−log σ(βh)) + w e^{{−βh}}, w = σ(βh/τ) | Lu et al. 2024 (2406.08414) |
| `sigmoid_norm` (LN-DPO) | −log σ(β(ρ_c/L_c − ρ_r/L_r)) | Meng et al. 2024 (2405.14734) |

Some depend on the margin h only; NCA, BCO, SPPO and APO act on ρ_c and ρ_r apart. SimPO, CPO and
ORPO (`SimPOLoss`, `CPOLoss`, `ORPOLoss`) drop the reference model. The papers are listed in the
[references]({REFS})."""),
        new_code_cell("""import math

import numpy as np
import torch

import lossviz
from lossviz.losses import DPOLoss
from lossviz.teaching import check, reveal, show"""),

        new_markdown_cell("""## 1 · One batch, every type, on one axis

Seven pairs with margins h from −4 to 4, split evenly (ρ_c = h/2, ρ_r = −h/2), go through the
production class of each type at β = 0.5 (ε = 0.1 for the two that take one). `DPOLoss` returns the
mean over the pairs, so autograd's gradient times the batch size is each pair's own gradient. The
table is the push on log π(y_c) of each pair: where it is 0 the loss stops pushing."""),
        new_code_cell("""margins = torch.tensor([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0], dtype=torch.float64)
TYPES = ["sigmoid", "ipo", "robust", "hinge", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
         "apo_zero", "apo_down", "discopop"]


def pushes(loss_type, beta=0.5, eps=0.1):
    chosen = (margins / 2).clone().requires_grad_(True)
    rejected = -margins / 2
    zeros = torch.zeros_like(margins)
    smoothing = eps if loss_type in ("robust", "exo_pair") else 0.0
    module = DPOLoss(beta, label_smoothing=smoothing, loss_type=loss_type)
    loss, _, _ = module(chosen, rejected, zeros, zeros)
    loss.backward()
    return -chosen.grad * len(margins)  # −∂ℓ_i/∂log π(y_c,i) of each pair


print(f"{'h =':<10}" + "".join(f"{h:>8.0f}" for h in margins.tolist()))
for t in TYPES:
    row = [round(p, 3) + 0.0 for p in pushes(t).tolist()]  # + 0.0: 0.000, not -0.000
    print(f"{t:<10}" + "".join(f"{p:>8.3f}" for p in row))"""),
        new_markdown_cell("""Read the rows from left (the pair ranked the wrong way) to right:

- DPO's push β σ(−βh) never reaches 0; it only fades. rDPO's never even fades below βε/(1−2ε).
- IPO and SPPO are regressions: their push changes sign at their target and grows without bound
  the further away a pair is (a wrongly ranked pair pulls hardest of all).
- hinge pushes with β or not at all: nothing once βh ≥ 1.
- EXO's push is 0 where σ(βh) = 1 − ε, the same margin where cDPO stops.
- BCO and APO-zero push log π(y_c) *up* whatever ρ_r is: their push on y_c depends on ρ_c alone.
  NCA does too until βρ_c = log 2, and pulls it back beyond (the last column).
- APO-down's own term σ(βρ_c) pushes the chosen log-prob *down*; its margin term lifts it, but on this
  batch by less everywhere (they cancel only at h = 0).
- DiscoPOP is not monotone: at h = 0 its push is negative. Trained from the reference, it moves the
  margin the wrong way.

## 2 · Where each one stops when trained

The scenario `deterministic-preferences` trains a tabular policy over 4 responses with the same
label every time (y_c ≻ y_r), so any loss without a fixed point drives the margin up forever."""),
        new_markdown_cell(_claim("deterministic-preferences")),
        new_code_cell("""sim = lossviz.simulate("deterministic-preferences", losses="ipo,cdpo,exo,sppo,hinge,discopop", beta=2.0)
for loss, run in sim.runs.items():
    print(f"{loss:<9} margin {run['margin'][-1]:8.4f}   ρ_c {run['logratio_chosen'][-1]:7.4f}"
          f"   ρ_r {run['logratio_rejected'][-1]:8.4f}   push on y_c {run['push_chosen'][-1]: .1e}")
show(sim.figure())"""),
        new_markdown_cell("""The regressions and EXO land on their targets to four digits; hinge stops wherever it first
reaches βh ≥ 1 and Adam's momentum runs out, so its margin ends well past 1/β. A target for ρ_c can
be out of reach: ρ_c = log π(y_c) − log π_ref(y_c) ≤ −log π_ref(y_c), since π(y_c) ≤ 1. Here
π_ref(y_c) = 0.64, so SPPO's target 1/(2β) is reachable at β = 2 but not at β = 0.5.

The losses without a fixed point (`rDPO`, `BCO`, `APO-zero`, `NCA`'s ρ_r) run on. DiscoPOP at the
scenario's own β = 0.5 never gets going: its slope at h = 0 is positive, and the margin settles at a
local minimum on the wrong side."""),
        new_code_cell("""free = lossviz.simulate("deterministic-preferences", losses="dpo,robust,bco,apo-zero,nca,discopop")
for loss, run in free.runs.items():
    print(f"{loss:<9} margin after {len(free.steps) - 1} steps {run['margin'][-1]:8.3f}, "
          f"still rising by {run['margin'][-1] - run['margin'][-11]:.1e} per 10 steps")"""),
        new_markdown_cell("""**Exercise 1.** At β = 1.4, where does SPPO put the chosen log-ratio ρ_c?

**Exercise 2.** NCA's two terms in ρ_c are −log σ(βρ_c) − ½ log σ(−βρ_c). Where does ρ_c stop at β = 3?

**Exercise 3.** DiscoPOP's resting point is a fixed value z* of βh. Using the run above (β = 0.5),
where does its margin h settle at β = 0.25?"""),
        new_code_cell("""answer_1 = ...  # SPPO's ρ_c at β = 1.4
answer_2 = ...  # NCA's ρ_c at β = 3
answer_3 = ...  # DiscoPOP's resting margin h at β = 0.25
check("zoo-1", answer_1)
check("zoo-2", answer_2)
check("zoo-3", answer_3);"""),

        new_markdown_cell(f"""## 3 · Label noise

If a fraction ε of the labels is flipped at random, the expected loss of a pair is
(1 − ε)·ℓ(h) + ε·ℓ(−h). For DPO that moves the minimum to a finite margin (the flip rate caps the
preference); rDPO divides by 1 − 2ε so that the expectation is the clean loss −log σ(βh) again
(Chowdhury et al. 2024, its unbiasedness). On a real batch: four copies of one pair, one of them
flipped, so the batch mean is exactly the expectation at ε = ¼."""),
        new_code_cell("""h = torch.tensor([1.5, 1.5, 1.5, -1.5], dtype=torch.float64)  # the last copy is flipped
zeros = torch.zeros(4, dtype=torch.float64)
rdpo = DPOLoss(0.5, label_smoothing=0.25, loss_type="robust")(h / 2, -h / 2, zeros, zeros)[0]
clean = DPOLoss(0.5)(h[:1] / 2, -h[:1] / 2, zeros[:1], zeros[:1])[0]
print(f"rDPO on the noisy batch: {rdpo.item():.12f}")
print(f"DPO on the clean pair:   {clean.item():.12f}")"""),
        new_markdown_cell(_claim("noisy-labels")),
        new_code_cell("""noisy = lossviz.simulate("noisy-labels", losses="dpo,cdpo,robust,hinge,ipo,apo-zero")
for loss, run in noisy.runs.items():
    print(f"{loss:<9} accuracy {run['accuracy'][-1]:.3f}   weight on flipped / clean pairs at the end "
          f"{run['weight_flipped'][-1] / run['weight_clean'][-1]:5.2f}   KL {run['kl'][-1]:.2f}")
show(noisy.figure())"""),
        new_markdown_cell("""**Exercise 4.** rDPO's push on log π(y_c) never falls below a floor, however large βh gets. What is
that floor at β = 0.5 and ε = 0.2?

**Exercise 5.** One pair, labelled y_c ≻ y_r three times out of four (the batch of the cell above,
trained). At β = 0.5, where does plain DPO's margin stop?"""),
        new_code_cell("""answer_4 = ...  # the limit of rDPO's push as βh → ∞, β = 0.5, ε = 0.2
answer_5 = ...  # DPO's final margin h with a quarter of the labels flipped, β = 0.5
check("zoo-4", answer_4)
check("zoo-5", answer_5);"""),

        new_markdown_cell("""## 4 · Positive terms against likelihood displacement

DPO can lower log π(y_c) while it raises the margin, when the chosen and rejected responses are
alike (notebook 07). A loss that weighs the two apart moves log π(y_c) by
η[w·‖φ_c − φ̄‖² − w_r·(φ_r − φ̄)·(φ_c − φ̄)] per step, to first order: an NLL term on the chosen response
(RPO's α, CPO, ORPO) adds to w alone."""),
        new_code_cell("""sim = lossviz.simulate("likelihood-displacement", losses="dpo,rpo,apo-zero,simpo,orpo")
for loss, run in sim.runs.items():
    print(f"{loss:<9} log π(y_c): {run['logp_chosen'][0]:.3f} -> {run['logp_chosen'][-1]:.3f}")
show(sim.figure())"""),
        new_markdown_cell("""**Exercise 6.** The policy starts uniform (φ̄ = 0) with φ_c = (1, 0) and φ_r = (1 + CHES, gap), so at the
first step w = β/2 + α and w_r = β/2 for RPO. At β = 0.5 and CHES = 1.3, what is the smallest α for
which RPO's first step raises log π(y_c)?"""),
        new_code_cell("""answer_6 = ...  # the smallest α, β = 0.5, CHES = 1.3
check("zoo-6", answer_6);"""),

        new_markdown_cell(_claim("length").replace("**Policy.**", "## 5 · Length: summed log-probs\n\n**Policy.**")),
        new_code_cell("""sim = lossviz.simulate("length")
show(sim.figure())"""),
        new_markdown_cell("""**Exercise 7.** Three pairs of lengths 5, 10 and 20 start at the reference (h = 0) and are trained
with DPO on summed log-probs. What share of the push on the chosen tokens comes from the 20-token pair
at the first step?"""),
        new_code_cell("""answer_7 = ...  # the 20-token pair's share at the first step
check("zoo-7", answer_7);"""),
    ]
