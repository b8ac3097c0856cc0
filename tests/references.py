"""Independent float64 references for the production losses, written from the formulas.

Nothing here calls lossviz or the torch loss primitives (cross_entropy, logsigmoid,
log_softmax, clamp): only elementary ops and explicit loops, so a bug in the production
code cannot hide in a shared helper. Gradients come from autograd of these references.
"""

from __future__ import annotations

import torch

IGNORE = -100


def neg_log_sigmoid(x):
    """-log sigma(x) = max(-x, 0) + log(1 + e^{-|x|})."""
    return torch.where(x < 0, -x, 0 * x) + torch.log1p(torch.exp(-torch.abs(x)))


def sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def log_sum_exp(z):
    top = z.max()
    return top + torch.log(torch.exp(z - top).sum())


def _mean_or_zero(terms, like):
    return torch.stack(terms).sum() / len(terms) if terms else 0.0 * like.sum()


def gptlm(logits, labels):
    terms = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y != IGNORE:
                z = logits[b, t]
                terms.append(log_sum_exp(z) - z[y])
    return _mean_or_zero(terms, logits)


def kd(logits, teacher_logits, label):
    terms = []
    flat_z = logits.reshape(-1, logits.shape[-1])
    flat_t = teacher_logits.reshape(-1, logits.shape[-1])
    for n, y in enumerate(label.reshape(-1).tolist()):
        if y == IGNORE:
            continue
        z, t = flat_z[n], flat_t[n]
        finite = [k for k in range(z.shape[0]) if torch.isfinite(z[k])]
        lse_z = log_sum_exp(z[finite])
        lse_t = log_sum_exp(t)
        terms.append(-sum(torch.exp(t[k] - lse_t) * (z[k] - lse_z) for k in finite))
    return _mean_or_zero(terms, logits)


def dpo(beta, label_smoothing, ipo, pc, pr, rc, rr):
    h = (pc - pr) - (rc - rr)
    if ipo:
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = (1 - label_smoothing) * neg_log_sigmoid(beta * h) + label_smoothing * neg_log_sigmoid(-beta * h)
    return losses.sum() / h.numel(), beta * (pc - rc).detach(), beta * (pr - rr).detach()


def kto(beta, w_d, w_u, pc, pr, pkl, rc, rr, rkl, kl=None):
    if kl is None:
        kl = (pkl - rkl).sum().detach() / pkl.numel()
    kl = torch.where(kl > 0, kl, 0 * kl).detach()
    chosen = [w_d * (1 - sigmoid(beta * (pc[i] - rc[i] - kl))) for i in range(pc.numel())]
    rejected = [w_u * (1 - sigmoid(beta * (kl - (pr[j] - rr[j])))) for j in range(pr.numel())]
    loss = torch.stack(chosen + rejected).sum() / (pc.numel() + pr.numel())
    return loss, beta * (pc - rc).detach(), beta * (pr - rr).detach(), kl


def vanilla_kto(beta, pc, pr, rc, rr):
    dc, dr = pc - rc, pr - rr
    mc, mr = dc.sum() / dc.numel(), dr.sum() / dr.numel()
    zc = torch.where(mc > 0, mc, 0 * mc)
    zr = torch.where(mr > 0, mr, 0 * mr)
    terms = [1 - sigmoid(beta * (d - zr)) for d in dc] + [1 - sigmoid(beta * (zc - d)) for d in dr]
    return torch.stack(terms).sum() / len(terms), beta * dc.detach(), beta * dr.detach()


def _reduce(per_token, mask, token_level):
    """per_token: list (sequences) of lists (tokens) of 0-d tensors; mask a float tensor or None."""
    rows = len(per_token)
    weights = [[1.0 if mask is None else float(mask[b, t]) for t in range(len(per_token[b]))] for b in range(rows)]
    if token_level:
        total = sum(w * x for b in range(rows) for w, x in zip(weights[b], per_token[b]) if w)
        count = sum(w for row in weights for w in row)
        return total / count if count else 0.0 * per_token[0][0]
    means = []
    for b in range(rows):
        count = sum(weights[b])
        total = sum(w * x for w, x in zip(weights[b], per_token[b]) if w)
        means.append(total / count if count else 0.0 * per_token[b][0])
    return sum(means) / rows


def policy(eps_low, eps_high, dual_clip, token_level, log_probs, old_log_probs, advantages, mask):
    per_token = []
    for b in range(log_probs.shape[0]):
        row = []
        for t in range(log_probs.shape[1]):
            r = torch.exp(log_probs[b, t] - old_log_probs[b, t])
            a = advantages[b, t]
            if a >= 0:  # -A * min(r, 1 + eps_high)
                loss = -a * (r if r < 1 + eps_high else 0 * r + (1 + eps_high))
            else:  # -A * max(r, 1 - eps_low), bounded by -c A under dual clip
                loss = -a * (r if r > 1 - eps_low else 0 * r + (1 - eps_low))
                if dual_clip is not None and loss > -dual_clip * a:
                    loss = -dual_clip * a + 0 * r
            row.append(loss)
        per_token.append(row)
    return _reduce(per_token, mask, token_level)


def value(eps_low, eps_high, token_level, values, old_values, returns, mask):
    per_token = []
    for b in range(values.shape[0]):
        row = []
        for t in range(values.shape[1]):
            v, v_old, ret = values[b, t], old_values[b, t], returns[b, t]
            err = (v - ret) ** 2
            if eps_low is not None:
                step = v - v_old
                if step > eps_high:
                    step = 0 * step + eps_high
                elif step < -eps_low:
                    step = 0 * step - eps_low
                clipped_err = (v_old + step - ret) ** 2
                if clipped_err > err:
                    err = clipped_err
            row.append(err)
        per_token.append(row)
    return 0.5 * _reduce(per_token, mask, token_level)


def pairwise(chosen, reject, margin=None):
    gap = chosen - reject - (0.0 if margin is None else margin)
    return neg_log_sigmoid(gap).sum() / gap.numel()


def prm(placeholder, reward_ids, inputs, logits, labels):
    terms, hits = [], []
    for b in range(inputs.shape[0]):
        for t in range(inputs.shape[1]):
            if int(inputs[b, t]) != placeholder:
                continue
            z = logits[b, t]
            y = labels[b, t]
            if float(y) == IGNORE:
                continue
            if labels.is_floating_point():
                p = float(y)
                pair = z[reward_ids]
                lse = log_sum_exp(pair)
                terms.append(-(p * (pair[0] - lse) + (1 - p) * (pair[1] - lse)))
                target = 0 if p >= 0.5 else 1
                hits.append(float(int(torch.argmax(pair)) == target))
            else:
                if reward_ids is not None:
                    target = reward_ids.index(int(y))
                    z = z[reward_ids]
                else:
                    target = int(y)
                terms.append(log_sum_exp(z) - z[target])
                hits.append(float(int(torch.argmax(z)) == target))
    loss = _mean_or_zero(terms, logits)
    acc = sum(hits) / len(hits) if hits else 0.0
    return loss, acc
