"""Independent float64 references for the RL losses of 2025-26, written from the formulas.

Nothing here calls lossviz or torch's loss primitives (clamp, sigmoid, logsigmoid, where,
std): only elementary ops on 0-d tensors inside explicit loops, so that a bug in the
production code cannot hide in a shared helper. Gradients come from autograd of these
references (or, for the KL estimators, from their closed forms).

Sources (docs/references.md): catalogue of the team (formulas and library semantics),
PPO Eq. 7, GSPO §4 (and GSPO-token), MiniMax-M1 §3.1 (CISPO), SAPO's soft gate,
GMPO, GPG, Dr. GRPO §3.1, RLOO, REINFORCE++, Schulman 2020.
"""

from __future__ import annotations

import math

import torch

MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def sg(x):
    return x.detach()


def _mask_value(mask, b, t):
    return 1.0 if mask is None else float(mask[b, t])


def _adv(advantages, b, t):
    return advantages[b, t] if advantages.shape[-1] > 1 else advantages[b, 0]


# ----------------------------------------------------------------------------- aggregation weights


def agg_weights(mask, shape, mode, scale_factor=None):
    """w[b][t] of the catalogue's table (§2): fully masked sequences are not counted."""
    rows, cols = shape
    m = [[_mask_value(mask, b, t) for t in range(cols)] for b in range(rows)]
    lengths = [sum(row) for row in m]
    total = sum(lengths)
    n_seq = sum(1 for length in lengths if length > 0)
    w = [[0.0] * cols for _ in range(rows)]
    for b in range(rows):
        for t in range(cols):
            if m[b][t] == 0:
                continue
            if mode == "token-mean":
                w[b][t] = m[b][t] / total
            elif mode == "seq-mean-token-mean":
                w[b][t] = m[b][t] / (n_seq * lengths[b])
            elif mode == "seq-mean-token-sum":
                w[b][t] = m[b][t] / n_seq
            elif mode == "seq-mean-token-sum-norm":
                w[b][t] = m[b][t] / (n_seq * (cols if scale_factor is None else scale_factor))
            else:
                raise AssertionError(mode)
    return w


def legacy_weights(mask, shape, token_level):
    """OpenRLHF v0.5.3's reduction (lossviz hardening: an empty row is 0 and counts in B)."""
    rows, cols = shape
    m = [[_mask_value(mask, b, t) for t in range(cols)] for b in range(rows)]
    total = sum(sum(row) for row in m)
    w = [[0.0] * cols for _ in range(rows)]
    for b in range(rows):
        length = sum(m[b])
        for t in range(cols):
            if m[b][t]:
                w[b][t] = m[b][t] / total if token_level else m[b][t] / (rows * length)
    return w


def weighted_sum(per_token, w):
    """sum_{b,t} w[b][t] * per_token[b][t], skipping zero weights (a masked NaN never enters)."""
    terms = [w[b][t] * per_token[b][t] for b in range(len(w)) for t in range(len(w[b])) if w[b][t] != 0.0]
    if not terms:
        return torch.zeros((), dtype=torch.float64)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def agg(loss_mat, mask, mode, scale_factor=None):
    rows, cols = loss_mat.shape
    per_token = [[loss_mat[b, t] for t in range(cols)] for b in range(rows)]
    return weighted_sum(per_token, agg_weights(mask, (rows, cols), mode, scale_factor))


# ----------------------------------------------------------------------------- per-token policy losses


def _clip(v, low, high):
    """clip with the gradient of the identity inside and zero outside (low may be None)."""
    if high is not None and v > high:
        return 0 * v + high
    if low is not None and v < low:
        return 0 * v + low
    return v


def ppo_token(r, a, eps_low, eps_high, dual_clip=None):
    surr1, surr2 = r * a, _clip(r, 1 - eps_low, 1 + eps_high) * a
    obj = surr1 if surr1 < surr2 else surr2
    if dual_clip is not None and a < 0 and obj < dual_clip * a:
        obj = 0 * obj + dual_clip * a
    return -obj


def sigmoid(z):
    return 1.0 / (1.0 + torch.exp(-z))


def per_token_losses(kind, log_probs, old_log_probs, advantages, mask, eps_low, eps_high, dual_clip=None,
                     tau_pos=1.0, tau_neg=1.05):
    """ppo, cispo, sapo, gpg: list of lists of 0-d tensors (masked positions are 0 constants)."""
    rows, cols = log_probs.shape
    out = []
    for b in range(rows):
        row = []
        for t in range(cols):
            if _mask_value(mask, b, t) == 0:
                row.append(torch.zeros((), dtype=torch.float64))
                continue
            lp, a = log_probs[b, t], _adv(advantages, b, t)
            r = torch.exp(lp - old_log_probs[b, t])
            if kind == "ppo":
                row.append(ppo_token(r, a, eps_low, eps_high, dual_clip))
            elif kind == "cispo":
                w = sg(_clip(r, None if eps_low is None else 1 - eps_low, 1 + eps_high))
                row.append(-w * a * lp)
            elif kind == "sapo":
                tau = tau_pos if a > 0 else tau_neg
                row.append(-(4.0 / tau) * sigmoid(tau * (r - 1.0)) * a)
            elif kind == "gpg":
                row.append(-a * lp)
            else:
                raise AssertionError(kind)
        out.append(row)
    return out


def _seq_mean(values, mask, b):
    kept = [(v, _mask_value(mask, b, t)) for t, v in enumerate(values) if _mask_value(mask, b, t) != 0]
    if not kept:
        return None
    total = kept[0][0] * kept[0][1]
    for v, m in kept[1:]:
        total = total + v * m
    return total / sum(m for _, m in kept)


def gspo_sequence(log_probs, old_log_probs, advantages, mask, eps_low, eps_high):
    """GSPO (§4) with one advantage per sequence: mean over the (non-empty) sequences of
    -min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t x_t), the gradient flowing through s_i."""
    rows, cols = log_probs.shape
    losses = []
    for b in range(rows):
        x = [log_probs[b, t] - old_log_probs[b, t] for t in range(cols)]
        mean_x = _seq_mean(x, mask, b)
        if mean_x is None:
            continue
        s = torch.exp(mean_x)
        a = _adv(advantages, b, 0)
        losses.append(ppo_token(s, a, eps_low, eps_high))
    return sum(losses[1:], losses[0]) / len(losses)


def gspo_token(log_probs, old_log_probs, advantages, mask, eps_low, eps_high):
    """GSPO-token: s_{i,t} = sg(s_i) * exp(x_t - sg(x_t)), per-token advantages, seq-mean-token-mean."""
    rows, cols = log_probs.shape
    per_token = []
    for b in range(rows):
        x = [log_probs[b, t] - old_log_probs[b, t] for t in range(cols)]
        mean_x = _seq_mean(x, mask, b)
        row = []
        for t in range(cols):
            if mean_x is None or _mask_value(mask, b, t) == 0:
                row.append(torch.zeros((), dtype=torch.float64))
                continue
            s_t = sg(torch.exp(mean_x)) * torch.exp(x[t] - sg(x[t]))
            row.append(ppo_token(s_t, _adv(advantages, b, t), eps_low, eps_high))
        per_token.append(row)
    return weighted_sum(per_token, agg_weights(mask, (rows, cols), "seq-mean-token-mean"))


def gmpo(log_probs, old_log_probs, advantages, mask, eps_low, eps_high):
    """GMPO (verl's form): -Abar_i exp(mean_t x~_t), mean over the non-empty sequences."""
    rows, cols = log_probs.shape
    losses = []
    for b in range(rows):
        tilde, advs = [], []
        for t in range(cols):
            x = log_probs[b, t] - old_log_probs[b, t]
            a = _adv(advantages, b, t)
            advs.append(a)
            if a > 0:  # the upper bound binds: min(x, clip(x))
                tilde.append(0 * x + eps_high if x > eps_high else x)
            elif a < 0:  # the lower bound binds: max(x, clip(x))
                tilde.append(0 * x - eps_low if x < -eps_low else x)
            else:
                tilde.append(0 * x)
        mean_tilde = _seq_mean(tilde, mask, b)
        if mean_tilde is None:
            continue
        losses.append(-_seq_mean(advs, mask, b) * torch.exp(mean_tilde))
    return sum(losses[1:], losses[0]) / len(losses)


def policy(kind, log_probs, old_log_probs, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=None,
           mode=None, token_level=False, scale_factor=None, tau_pos=1.0, tau_neg=1.05):
    """The loss of PolicyLoss(policy_loss_type=kind, loss_agg_mode=mode, ...), from the formulas."""
    if kind == "gspo":
        return gspo_token(log_probs, old_log_probs, advantages, mask, eps_low, eps_high)
    if kind == "gmpo":
        return gmpo(log_probs, old_log_probs, advantages, mask, eps_low, eps_high)
    per_token = per_token_losses(kind, log_probs, old_log_probs, advantages, mask, eps_low, eps_high, dual_clip, tau_pos, tau_neg)
    shape = tuple(log_probs.shape)
    if mode is None:
        w = legacy_weights(mask, shape, token_level)
    else:
        w = agg_weights(mask, shape, mode, scale_factor)
    return weighted_sum(per_token, w)


# ----------------------------------------------------------------------------- metrics


def metrics(kind, log_probs, old_log_probs, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=None):
    """Token means over the unmasked tokens: clip fraction, dual-clip fraction, k3 of KL(pi_old || pi)."""
    rows, cols = log_probs.shape
    clipped = low = kl = count = 0.0
    for b in range(rows):
        x_seq = [float(log_probs[b, t] - old_log_probs[b, t]) for t in range(cols)]
        m_seq = [_mask_value(mask, b, t) for t in range(cols)]
        n = sum(m_seq)
        mean_x = sum(x * m for x, m in zip(x_seq, m_seq)) / n if n else 0.0
        for t in range(cols):
            m = m_seq[t]
            if m == 0:
                continue
            x, a = x_seq[t], float(_adv(advantages, b, t))
            r = math.exp(x)
            count += m
            kl += m * (r - 1.0 - x)
            if kind in ("ppo", "gspo"):
                rr = math.exp(mean_x) if kind == "gspo" else r
                if (a > 0 and rr > 1 + eps_high) or (a < 0 and rr < 1 - eps_low):
                    clipped += m
                if dual_clip is not None and a < 0 and -a * max(rr, 1 - eps_low) > -dual_clip * a:
                    low += m
            elif kind == "cispo":
                if r > 1 + eps_high or (eps_low is not None and r < 1 - eps_low):
                    clipped += m
            elif kind == "gmpo":
                if (a > 0 and x > eps_high) or (a < 0 and x < -eps_low):
                    clipped += m
    return {"clip_fraction": clipped / count, "clip_fraction_low": low / count, "approx_kl": kl / count}


# ----------------------------------------------------------------------------- KL estimators


def kl_value_and_gradient(name, d):
    """(value, d value / d d) of each estimator at the float d (closed forms, Schulman 2020)."""
    if name == "k1":
        return d, 1.0
    if name == "k2":
        return 0.5 * d * d, d
    if name == "k3":
        return math.exp(-d) - 1.0 + d, 1.0 - math.exp(-d)
    if name == "abs":
        return abs(d), (d > 0) - (d < 0)
    if name == "k1+":
        return d, d
    if name == "k3+":
        return math.exp(-d) - 1.0 + d, d
    raise AssertionError(name)


# ----------------------------------------------------------------------------- group advantages


def advantages(rewards, group_size, method, eps=1e-6):
    """Loops over groups of the flat list ``rewards``; returns a flat list of floats."""
    rewards = [float(r) for r in rewards]
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        mean = sum(group) / group_size
        for i, r in enumerate(group):
            if method == "grpo":
                std = math.sqrt(sum((g - mean) ** 2 for g in group) / (group_size - 1))
                out.append((r - mean) / (std + eps))
            elif method in ("dr_grpo", "reinforce_baseline"):
                out.append(r - mean)
            elif method == "rloo":  # the mean of the others, not the identity
                others = group[:i] + group[i + 1:]
                out.append(r - sum(others) / len(others))
            else:
                raise AssertionError(method)
    if method == "reinforce_baseline":
        mean = sum(out) / len(out)
        std = math.sqrt(sum((c - mean) ** 2 for c in out) / len(out))
        out = [(c - mean) / (std + eps) for c in out]
    return out
