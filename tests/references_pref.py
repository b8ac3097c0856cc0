"""Independent float64 references for the preference and distillation losses of issue #14.

Written from the formulas of the papers and of ../shared/reference/catalogue.md §5–6, pair by
pair and token by token with elementary ops only (exp, log, log1p, sums): nothing here
calls lossviz or torch's loss primitives (logsigmoid, log_softmax, softmax, kl_div, relu),
so a bug in the production code cannot hide in a shared helper. Gradients come from
autograd through these references. Inputs are moderate (|βΔ| up to a few tens), where the
direct formulas are accurate in float64.
"""

from __future__ import annotations

import math

import torch

IGNORE = -100


def sig(x):
    return 1.0 / (1.0 + torch.exp(-x))


def log_sig(x):
    """log σ(x) = −log(1 + e^{−x}), written for both signs without overflow."""
    if x >= 0:
        return -torch.log1p(torch.exp(-x))
    return x - torch.log1p(torch.exp(x))


def _mean(terms):
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- DPO family

def dpo_pair(kind, beta, eps, tau, rc, rr, nll):
    """One pair's loss of one type; rc, rr the (maybe per-token) log-ratios, nll the chosen token-mean NLL."""
    d = rc - rr
    z = beta * d
    if kind == "sigmoid":
        return -(1 - eps) * log_sig(z) - eps * log_sig(-z)
    if kind == "sigmoid_norm":
        return -log_sig(z)
    if kind == "ipo":
        return (d - 1 / (2 * beta)) ** 2
    if kind == "robust":
        return (-(1 - eps) * log_sig(z) + eps * log_sig(-z)) / (1 - 2 * eps)
    if kind == "hinge":
        return 1 - z if z < 1 else 0 * z
    if kind == "exo_pair":
        a, b = sig(z), sig(-z)
        return a * torch.log(a / (1 - eps)) + b * torch.log(b / eps)
    if kind == "nca_pair":
        return -log_sig(beta * rc) - 0.5 * log_sig(-beta * rc) - 0.5 * log_sig(-beta * rr)
    if kind == "bco_pair":
        return -log_sig(beta * rc) - log_sig(-beta * rr)
    if kind == "sppo_hard":
        return (rc - 1 / (2 * beta)) ** 2 + (rr + 1 / (2 * beta)) ** 2
    if kind == "apo_zero":
        return (1 - sig(beta * rc)) + sig(beta * rr)
    if kind == "apo_down":
        return sig(beta * rc) + (1 - sig(z))
    if kind == "discopop":
        w = sig(z / tau)
        return (1 - w) * (-log_sig(z)) + w * torch.exp(-z)
    if kind == "sft":
        return nll
    raise ValueError(kind)


def dpo(types, beta, pc, pr, rc, rr, *, eps=0.0, tau=0.05, weights=None, length_normalized=False, nll_coef=0.0,
        lc=None, lr=None):
    """(loss, chosen_rewards, rejected_rewards): Σ_k w_k mean_i ℓ_k(i) + α mean_i NLL_i."""
    n = pc.shape[0]
    total = 0.0
    for k, kind in enumerate(types):
        terms = []
        for i in range(n):
            rho_c, rho_r = pc[i] - rc[i], pr[i] - rr[i]
            if length_normalized or kind == "sigmoid_norm":
                rho_c, rho_r = rho_c / float(lc[i]), rho_r / float(lr[i])
            nll = -pc[i] / float(lc[i]) if lc is not None else None
            terms.append(dpo_pair(kind, beta, eps, tau, rho_c, rho_r, nll))
        total = total + (1.0 if weights is None else weights[k]) * _mean(terms)
    if nll_coef:
        total = total + nll_coef * _mean([-pc[i] / float(lc[i]) for i in range(n)])
    rho_c, rho_r = (pc - rc).detach(), (pr - rr).detach()
    if length_normalized:
        rho_c, rho_r = rho_c / lc, rho_r / lr
    return total, beta * rho_c, beta * rho_r


def kto_apo_zero_unpaired(beta, w_d, w_u, pc, pr, rc, rr):
    chosen = [w_d * (1 - sig(beta * (pc[i] - rc[i]))) for i in range(pc.shape[0])]
    rejected = [w_u * sig(beta * (pr[j] - rr[j])) for j in range(pr.shape[0])]
    return _mean(chosen + rejected), beta * (pc - rc).detach(), beta * (pr - rr).detach()


# ----------------------------------------------------------------------------- reference-free

def simpo(beta, gamma, eps, pc, pr, lc, lr):
    terms = []
    for i in range(pc.shape[0]):
        u = beta * (pc[i] / float(lc[i]) - pr[i] / float(lr[i])) - gamma
        terms.append(-(1 - eps) * log_sig(u) - eps * log_sig(-u))
    return _mean(terms), beta * (pc / lc).detach(), beta * (pr / lr).detach()


def cpo(beta, alpha, eps, pc, pr, lc):
    terms = []
    for i in range(pc.shape[0]):
        u = beta * (pc[i] - pr[i])
        terms.append(-(1 - eps) * log_sig(u) - eps * log_sig(-u))
    loss = _mean(terms)
    if alpha:
        loss = loss + alpha * _mean([-pc[i] / float(lc[i]) for i in range(pc.shape[0])])
    return loss, beta * pc.detach(), beta * pr.detach()


def orpo(lam, pc, pr, lc, lr):
    """NLL(y_c) − λ log σ(log odds_c − log odds_r), odds = P/(1−P) at P = exp(mean log-prob)."""
    nll, ratio = [], []
    for i in range(pc.shape[0]):
        xc, xr = pc[i] / float(lc[i]), pr[i] / float(lr[i])
        odds_c = torch.exp(xc) / (1 - torch.exp(xc))
        odds_r = torch.exp(xr) / (1 - torch.exp(xr))
        ratio.append(log_sig(torch.log(odds_c) - torch.log(odds_r)))
        nll.append(-xc)
    return _mean(nll) - lam * _mean(ratio), lam * (pc / lc).detach(), lam * (pr / lr).detach()


# ----------------------------------------------------------------------------- distillation

def _probs(row, tau):
    e = [torch.exp((row[k] - row.max()) / tau) for k in range(row.shape[0])]
    s = sum(e)
    return [x / s for x in e]


def _kl(p, q):
    return sum(pk * torch.log(pk / qk) for pk, qk in zip(p, q))


def gkd(beta, tau, logits, teacher, label, ignore=IGNORE):
    """Mean over kept tokens of β KL(p_T‖m) + (1−β) KL(p_S‖m), m = β p_T + (1−β) p_S; the two KLs at β = 0, 1."""
    vocab = logits.shape[-1]
    z2, t2 = logits.reshape(-1, vocab), teacher.reshape(-1, vocab)
    terms = []
    for n, y in enumerate(label.reshape(-1).tolist()):
        if y == ignore:
            continue
        ps, pt = _probs(z2[n], tau), _probs(t2[n], tau)
        if beta == 0:
            terms.append(_kl(pt, ps))
        elif beta == 1:
            terms.append(_kl(ps, pt))
        else:
            m = [beta * a + (1 - beta) * b for a, b in zip(pt, ps)]
            terms.append(beta * _kl(pt, m) + (1 - beta) * _kl(ps, m))
    return _mean(terms) if terms else 0.0 * logits.sum()


def kd_temperature(tau, logits, teacher, label):
    """τ² · mean over kept tokens of −Σ_k q^τ_k log p^τ_k."""
    vocab = logits.shape[-1]
    z2, t2 = logits.reshape(-1, vocab), teacher.reshape(-1, vocab)
    terms = []
    for n, y in enumerate(label.reshape(-1).tolist()):
        if y == IGNORE:
            continue
        ps, pt = _probs(z2[n], tau), _probs(t2[n], tau)
        terms.append(-sum(q * torch.log(p) for q, p in zip(pt, ps)))
    return tau * tau * _mean(terms)


def log1mexp_exact(x: float) -> float:
    """log(1 − e^x) to full float64 accuracy (math.expm1 is correctly rounded near 0)."""
    return math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))
