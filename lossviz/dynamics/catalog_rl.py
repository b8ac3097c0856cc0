"""The RL scenarios of the GRPO family: aggregation and length, and KL estimators as loss terms.

Declared like those of :mod:`.catalog` (one ``@scenario(...)`` on the function that runs it) and
trained with the production code of :mod:`lossviz.losses` only: ``PolicyLoss`` (with its
``loss_agg_mode``), ``group_advantages`` and ``compute_approx_kl``. Beside the runs, each scenario
computes the *exact* expected gradient the estimator gives (by enumerating every length, or every
action), so a learner sees which drift is bias and which is noise.
"""

from __future__ import annotations

import math

import numpy as np

from . import figures
from .declare import SimParam, scenario
from .engine import ADVANTAGE_METHODS, AGG_MODES, KL_ESTIMATORS, Recorder, Run, build_loss, loss_params

# --------------------------------------------------------------------------------------------- length bias

LENGTH_DEFAULTS = ("grpo/seq-mean-token-mean", "grpo/token-mean", "grpo/seq-mean-token-sum-norm",
                   "dr_grpo/seq-mean-token-sum-norm")
#: the estimators whose advantage depends on the rewards of one group only (exact values by enumeration)
GROUP_METHODS = ("grpo", "dr_grpo", "rloo")


def split_name(loss: str):
    """"grpo/seq-mean-token-mean" -> ("grpo", "seq-mean-token-mean")."""
    method, mode = loss.split("/", 1)
    return method, mode


def length_outcomes(ell: float, max_len: int):
    """The outcomes of an answer with length logit ℓ, as :meth:`AnswerLengthPolicy.length_outcomes` lists them,
    in numpy float64: (probabilities, lengths, scores ∂log p/∂ℓ). Outcome t < T − 1 stops at position t + 1."""
    T = max_len
    fillers = np.append(np.arange(T - 1, dtype=np.float64), T - 1.0)
    stops = np.append(np.ones(T - 1), 0.0)
    go_on = 1.0 / (1.0 + math.exp(-ell))
    log_p = fillers * -np.logaddexp(0.0, -ell) + stops * -np.logaddexp(0.0, ell)
    score = fillers * (1.0 - go_on) - stops * go_on
    lengths = np.append(np.arange(2, T + 1, dtype=np.float64), float(T))
    return np.exp(log_p), lengths, score


def length_moments(policy, answer: int):
    """(E[L | answer], the outcomes' probabilities, lengths and scores ∂log p/∂ℓ_answer) as numpy float64."""
    p, lengths, score = length_outcomes(float(policy.length_logits[answer].detach()), policy.max_len)
    return float(p @ lengths), p, lengths, score


def group_advantage_of_first(method: str, group_size: int, correct_others: int, first_correct: bool) -> float:
    """A_1 from the production ``group_advantages`` for a group whose first answer is (in)correct and
    ``correct_others`` of the other G − 1 answers are correct (the advantage of a group estimator
    depends on its rewards only)."""
    import torch

    from .. import losses as L
    from .policies import DTYPE

    rewards = torch.zeros(1, group_size, dtype=DTYPE)
    rewards[0, 0] = 1.0 if first_correct else 0.0
    rewards[0, 1:1 + correct_others] = 1.0
    return float(L.group_advantages(rewards, group_size, method=method)[0, 0])


def _binomial(n: int, p: float) -> np.ndarray:
    k = np.arange(n + 1)
    return np.array([math.comb(n, int(j)) for j in k], dtype=np.float64) * p**k * (1 - p) ** (n - k)


def _length_pmf(p, lengths, size: int) -> np.ndarray:
    pmf = np.zeros(size)
    np.add.at(pmf, lengths.astype(int), p)
    return pmf


def exact_length_push(policy, method: str, mode: str, group_size: int, batch: int, p_correct: float,
                      advantages=None) -> float:
    """The exact expected push −E[∂loss/∂ℓ_wrong] that one on-policy batch gives the wrong answers' length logit.

    At ratio 1 the loss's gradient on sequence i is −w(i)·A_i·∂log π(y_i), with w the aggregation weight of
    its tokens; only wrong answers depend on ℓ_wrong, and ∂log π(y_i)/∂ℓ_wrong = s(o_i) depends on how the
    answer ended (outcome o_i). The answers are exchangeable, so the push is
    B·E[w(1)·A_1·1{wrong}·s(o_1)], enumerated over: the number k of correct answers among the other G − 1 of
    the group (binomial; A_1 depends on k alone, taken from the production ``group_advantages``), the outcome
    o_1 of the first answer's length, and for ``token-mean`` (w = 1/Σ_j L_j) the total length S of the other
    B − 1 answers, whose distribution is a convolution of the correct and wrong length distributions given
    how many of them are correct. NaN for an estimator that depends on the whole batch (reinforce_baseline)
    under a mode whose weight depends on the length.
    """
    T = policy.max_len
    _, p_w, len_w, s_w = length_moments(policy, 1)
    if mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        return 0.0  # w is a constant: B·w·E[A_1 1{wrong}]·E[s(o) | wrong] and E[s(o)] = 0 (a score has mean 0)
    if method not in GROUP_METHODS:
        return math.nan
    p_wrong = 1.0 - p_correct
    k_probs = _binomial(group_size - 1, p_correct)
    adv = np.array([group_advantage_of_first(method, group_size, k, False) if advantages is None else advantages[k]
                    for k in range(group_size)])
    if mode == "seq-mean-token-mean":  # w = 1/(B·L_1): B·E[...] = E[A_1 | wrong]·P(wrong)·E[s/L | wrong]
        return p_wrong * float(k_probs @ adv) * float(p_w @ (s_w / len_w))
    # token-mean: w = 1/(L_1 + S), S the total length of the other B − 1 answers, c of them correct:
    # the pmf of S is the inverse FFT of the product of the length pmfs' transforms (exact up to rounding)
    _, p_c, len_c, _ = length_moments(policy, 0)
    size = (batch - 1) * T + 1
    fft_c = np.fft.rfft(_length_pmf(p_c, len_c, T + 1), size)
    fft_w = np.fft.rfft(_length_pmf(p_w, len_w, T + 1), size)
    c = np.arange(batch)[:, None]
    s_pmf = np.fft.irfft(fft_c[None, :] ** c * fft_w[None, :] ** (batch - 1 - c), size)  # (c, S)
    support = np.arange(size)
    # E over o_1 of s(o_1)/(L(o_1) + S), for every S; then over S given c
    per_s = (p_w * s_w) @ (1.0 / (len_w[:, None] + support[None, :]))
    inner = s_pmf @ per_s  # (c,)
    m_probs = _binomial(batch - group_size, p_correct)  # correct answers in the other groups
    total = sum(pk * adv[k] * float(m_probs @ inner[k:k + len(m_probs)]) for k, pk in enumerate(k_probs))
    return batch * p_wrong * total


def sequence_kl(policy, start_logits) -> float:
    """Exact KL(π‖π_start) over whole sequences: the answers keep their probabilities, only the lengths move."""
    total = 0.0
    answer = policy.answer_logits.exp().numpy()
    for a in (0, 1):
        p, _, _ = length_outcomes(float(policy.length_logits[a].detach()), policy.max_len)
        q, _, _ = length_outcomes(float(start_logits[a]), policy.max_len)
        total += answer[a] * float(p @ (np.log(p) - np.log(q)))
    return total


@scenario(
    name="length-bias",
    title="Length bias: seq-mean-token-mean lengthens wrong answers, Dr. GRPO does not",
    policy="tiny autoregressive policy: an answer token (correct with a fixed probability p), then filler tokens "
    "until a stop token or 16 tokens; one length logit per kind of answer",
    data="groups of G answers to one prompt, sampled on-policy every step; reward 1 for a correct answer, 0 for a "
    "wrong one, whatever its length",
    losses=tuple(f"{m}/{mode}" for m in ADVANTAGE_METHODS for mode in AGG_MODES),
    default_losses=LENGTH_DEFAULTS,
    params=(
        SimParam("p_correct", 0.5, 0.05, 0.95, "probability that an answer is correct (fixed: only lengths are learned)",
                 slider_step=0.05),
        SimParam("group_size", 8, 2, 32, "answers per group G", integer=True),
        SimParam("groups", 8, 1, 32, "groups per batch", integer=True),
        SimParam("max_len", 16, 4, 32, "longest answer T (padded length)", integer=True),
    ),
    series=("length_wrong", "length_correct", "push_length_wrong", "push_length_wrong_exact", "length_logit_wrong"),
    claim="The reward does not depend on the length, so the policy gradient on the length is zero: with a constant "
    "normaliser (seq-mean-token-sum, seq-mean-token-sum-norm) the exact expected push on the wrong answers' length "
    "logit is 0 for every advantage estimator, and the lengths only wander (Dr. GRPO: 4.9 to 4.7 tokens in 200 steps "
    "at the defaults). Under seq-mean-token-mean (the GRPO paper's objective) each token of answer i weighs "
    "1/(B·L_i): a long wrong answer is penalised less per token, the expected push on its length is positive "
    "whatever the advantage estimator, and the wrong answers grow from 4.9 to 15.5 tokens (of 16) while the correct "
    "ones shrink to 2.0. token-mean's weight 1/Σ_j L_j ties an answer to the whole batch: its exact push is 1/58 of "
    "that at the start (0.0008 against 0.045), and its run wanders with the noise.",
    source="Liu et al. 2025, Dr. GRPO (arXiv:2503.20783), §3.1; Yu et al. 2025, DAPO (arXiv:2503.14476), §3.3",
    steps=200,
    lr=2.0,
    optimizer="sgd",
    figure=figures.length_bias,
)
def length_bias(ctx):
    import torch

    from .. import losses as L
    from .policies import DTYPE, AnswerLengthPolicy

    p = ctx.params
    G, n, T, p_correct = int(p["group_size"]), int(p["groups"]), int(p["max_len"]), float(p["p_correct"])
    B = G * n
    start = math.log(3.0)  # continue with probability 3/4: E[L] ≈ 4.9 tokens at T = 16
    runs, exact_table = {}, {}
    probe = AnswerLengthPolicy(p_correct, start, T)
    for method in GROUP_METHODS:  # the push at the start policy, every estimator and mode (the figure's bars)
        advantages = [group_advantage_of_first(method, G, k, False) for k in range(G)]
        for mode in AGG_MODES:
            exact_table[(method, mode)] = exact_length_push(probe, method, mode, G, B, p_correct, advantages)
    for loss in ctx.losses:
        method, mode = split_name(loss)
        module = build_loss(loss, p)
        policy = AnswerLengthPolicy(p_correct, start, T)
        start_logits = policy.length_logits.detach().clone()
        optimizer = ctx.optimizer(policy.parameters())
        gen = ctx.generator()  # every run sees the same random stream
        advantages = [group_advantage_of_first(method, G, k, False) for k in range(G)] if method in GROUP_METHODS else None
        rec = Recorder()
        for k in range(ctx.steps + 1):
            tokens, mask, wrong = policy.sample(B, gen)
            rewards = (~wrong).to(DTYPE)
            adv = L.group_advantages(rewards, G, method=method)
            logp = policy.token_log_probs(tokens)
            value = module(logp, logp.detach(), adv.unsqueeze(1) * mask, mask)
            optimizer.zero_grad()
            value.backward()
            length_wrong, *_ = length_moments(policy, 1)
            length_correct, *_ = length_moments(policy, 0)
            rec.add(loss=value.item(), kl=sequence_kl(policy, start_logits), length_wrong=length_wrong,
                    length_correct=length_correct, push_length_wrong=-float(policy.length_logits.grad[1]),
                    push_length_wrong_exact=exact_length_push(policy, method, mode, G, B, p_correct, advantages),
                    length_logit_wrong=float(policy.length_logits[1].detach()))
            if k < ctx.steps:
                optimizer.step()
                ctx.progress.update()
        runs[loss] = Run(loss, {**loss_params(loss, p), "advantage": method, "loss_agg_mode": mode}, rec.arrays())
    return runs, np.arange(ctx.steps + 1), {"exact_table": exact_table, "batch": B}


# --------------------------------------------------------------------------------------------- KL estimators


def kl_gradients(logits, ref_logits):
    """∇_θ KL(π‖π_ref) and ∇_θ KL(π_ref‖π) for π = softmax(θ), in closed form (numpy float64).

    ∂KL(π‖q)/∂θ_j = π_j·(log π_j − log q_j − KL(π‖q));  ∂KL(q‖π)/∂θ_j = π_j − q_j.
    """
    logits, ref_logits = np.asarray(logits, dtype=np.float64), np.asarray(ref_logits, dtype=np.float64)
    log_p = logits - np.logaddexp.reduce(logits)
    log_q = ref_logits - np.logaddexp.reduce(ref_logits)
    p, q = np.exp(log_p), np.exp(log_q)
    kl = float(p @ (log_p - log_q))
    return p * (log_p - log_q - kl), p - q


def expected_kl_term_gradient(estimator: str, logits, ref_logits) -> np.ndarray:
    """The exact on-policy expected gradient of the loss term k(log π(y) − log π_ref(y)), y ~ π (not differentiated):
    Σ_y π(y)·∇_θ k(y), from the production ``compute_approx_kl`` by autograd (a sum over the actions)."""
    import torch

    from .. import losses as L
    from .policies import DTYPE

    theta = torch.tensor(np.asarray(logits, dtype=np.float64), dtype=DTYPE, requires_grad=True)
    ref = torch.log_softmax(torch.tensor(np.asarray(ref_logits, dtype=np.float64), dtype=DTYPE), dim=-1)
    log_p = torch.log_softmax(theta, dim=-1)
    weights = log_p.detach().exp()  # the sampling distribution carries no gradient
    (weights * L.compute_approx_kl(log_p, ref, kl_estimator=estimator)).sum().backward()
    return theta.grad.numpy().copy()


def reverse_kl_optimum(ref_probs, reward, beta):
    """argmax_π E_π[r] − β·KL(π‖π_ref) = π_ref·e^{r/β}/Z."""
    w = np.log(ref_probs) + np.asarray(reward) / beta
    return np.exp(w - np.logaddexp.reduce(w))


def forward_kl_optimum(ref_probs, reward, beta):
    """argmax_π E_π[r] − β·KL(π_ref‖π): stationarity r_y + β·q_y/π_y = μ gives π_y = β·q_y/(μ − r_y), μ > max r,
    with μ the root of Σ_y π_y = 1 (by bisection; the sum falls from ∞ to 0 as μ grows)."""
    q, r = np.asarray(ref_probs, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    lo, hi = r.max() + 1e-15, r.max() + beta + 1.0
    while (beta * q / (hi - r)).sum() > 1:
        hi = r.max() + 2 * (hi - r.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (beta * q / (mid - r)).sum() > 1:
            lo = mid
        else:
            hi = mid
    pi = beta * q / (0.5 * (lo + hi) - r)
    return pi / pi.sum()


KL_DEFAULTS = ("no-kl", "k1", "k2", "k3")


def kl_setup(actions: int):
    """(log π_ref, reward): π_ref(y*) = 0.1 for the rewarded action y* = 0, the rest shared equally; reward 1 on y*."""
    ref_probs = np.full(actions, 0.9 / (actions - 1))
    ref_probs[0] = 0.1
    reward = np.zeros(actions)
    reward[0] = 1.0
    return np.log(ref_probs), reward


@scenario(
    name="kl-estimators",
    title="KL estimators as loss terms: k1 does not regularise, k2 is the reverse KL, k3 the forward KL",
    policy="tabular softmax over 6 actions (one logit each), started at the reference",
    data="actions sampled on-policy every step; reward 1 on one action that the reference gives 0.1, 0 elsewhere; "
    "advantage = reward − the batch's mean reward",
    losses=("no-kl", *KL_ESTIMATORS, "k1-in-reward"),
    default_losses=KL_DEFAULTS,
    params=(
        SimParam("beta", 0.5, 0.05, 5.0, "weight β of the KL term", slider_step=0.05),
        SimParam("samples", 256, 8, 4096, "actions sampled per step", integer=True),
    ),
    series=("p_rewarded", "reward", "kl_forward"),
    claim="On-policy, the expected gradient of a loss term β·k(log π − log π_ref) is β·Σ_y π(y)∇k: 0 for k1 "
    "(E_π[∇log π] = 0), ∇KL(π‖π_ref) for k2 and ∇KL(π_ref‖π) for k3. So a k1 term does not hold the policy "
    "back: it drifts to the rewarded action as without a KL term (π(y*) = 0.999 after 300 steps at β = 0.5); k2 "
    "stops at the reverse-KL optimum π_ref·e^{r/β}/Z (0.451; the run ends at 0.443) and k3 at the forward-KL "
    "optimum (0.585; the run ends at 0.583). k1 in the reward, r − β·k1 (detached), is the policy gradient of "
    "E[r] − β·KL(π‖π_ref) and stops where k2 does.",
    source="Schulman 2020, \"Approximating KL divergence\"; Tang & Munos 2025 (arXiv:2506.09477), §3",
    steps=300,
    lr=0.1,
    optimizer="adam",
    figure=figures.kl_estimators,
)
def kl_estimators(ctx):
    import torch

    from .policies import DTYPE, TabularSoftmax

    beta, n = float(ctx.params["beta"]), int(ctx.params["samples"])
    ref_logits, reward = kl_setup(6)
    ref_probs = np.exp(ref_logits)
    reverse_opt = reverse_kl_optimum(ref_probs, reward, beta)
    forward_opt = forward_kl_optimum(ref_probs, reward, beta)
    reward_t = torch.tensor(reward, dtype=DTYPE)
    runs, final = {}, {}
    for loss in ctx.losses:
        pg, kl_term = build_loss(loss, ctx.params)
        policy = TabularSoftmax(torch.tensor(ref_logits, dtype=DTYPE).unsqueeze(0))
        ref = policy.reference_log_probs().detach()[0]
        optimizer = ctx.optimizer(policy.parameters())
        gen = ctx.generator()
        rec = Recorder()
        for k in range(ctx.steps + 1):
            log_p = policy.log_probs()[0]
            y = torch.multinomial(log_p.detach().exp(), n, replacement=True, generator=gen)
            logp_y, ref_y = log_p[y].unsqueeze(1), ref[y].unsqueeze(1)  # (n, 1): one-token responses
            r = reward_t[y]
            if loss == "k1-in-reward":
                r = r - beta * (logp_y.detach() - ref_y).squeeze(1)  # k1 in the reward, detached
            adv = (r - r.mean()).unsqueeze(1)
            value = pg(logp_y, logp_y.detach(), adv)
            if kl_term is not None:
                value = value + beta * kl_term(logp_y, ref_y).mean()
            optimizer.zero_grad()
            value.backward()
            with torch.no_grad():
                probs = log_p.exp()
                kl_fwd = float((ref.exp() * (ref - log_p)).sum())
            rec.add(loss=value.item(), kl=policy.kl(), kl_forward=kl_fwd, p_rewarded=probs[0],
                    reward=float(probs @ reward_t))
            if k < ctx.steps:
                optimizer.step()
                ctx.progress.update()
        runs[loss] = Run(loss, {**loss_params(loss, ctx.params), "samples": n}, rec.arrays())
        final[loss] = policy.logits.detach()[0].numpy().copy()
    # the exact expected gradients of each estimator as a loss term, at the reverse-KL optimum (where KL ≠ 0)
    at = np.log(reverse_opt)
    grads = {est: expected_kl_term_gradient(est, at, ref_logits) for est in KL_ESTIMATORS}
    reverse_grad, forward_grad = kl_gradients(at, ref_logits)
    extra = {"reverse_optimum": reverse_opt, "forward_optimum": forward_opt, "ref_probs": ref_probs,
             "probe_logits": at, "final_logits": final, "grads": grads, "reverse_grad": reverse_grad,
             "forward_grad": forward_grad}
    return runs, np.arange(ctx.steps + 1), extra
