"""Fused-linear sequence losses: lossviz against the naive form (full logits) and Liger-Kernel's chunked losses.

One process, the same seeded inputs for every implementation. Per loss it runs forward +
backward and reports:
- the first call's time (Liger compiles its chunk function with ``torch.compile`` there) and
  the compile time = first call − steady-state median;
- the median steady-state time, timed in interleaved rounds (naive, lossviz, Liger, naive, ...);
- the *extra* peak memory beyond the inputs (the gradient buffers of hidden and weight count);
- the relative gradient difference (hidden and weight) against the naive form.

The naive form is what a training loop without fusion does: ``F.linear`` to the full logits,
log-softmax, the labels' log-probabilities, then lossviz's own module (DPOLoss, ...). Liger is
``liger-kernel==0.8.5`` (the ``bench`` extra: ``.venv/bin/pip install -c constraints.txt
liger-kernel==0.8.5``); it is imported only here, and skipped when absent.

Memory on CPU: the process's peak resident set (``VmHWM`` of /proc/self/status, reset through
``/proc/self/clear_refs`` before each measured call) minus the resident set at the start of the
call, with glibc's mmap threshold fixed at 64 KiB so that freed tensors go back to the OS (the
script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` set), as benchmarks/bench_losses.py
does. On CUDA, ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_fused.py                # the sizes of issue #15 (slow on 2 CPU cores: minutes per loss)
    python benchmarks/bench_fused.py --quick        # smaller sizes for development
    python benchmarks/bench_fused.py --smoke        # tiny, one round (a check that it runs)
    python benchmarks/bench_fused.py --only DPO --vocab 32000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_losses import MMAP_THRESHOLD, Meter, available_bytes, rel_err  # noqa: E402


def _liger():
    try:
        import liger_kernel.chunked_loss as liger  # noqa: F401
    except Exception:  # not installed (the `bench` extra) or broken
        return None
    return liger


# ----------------------------------------------------------------------------- naive forms (full logits)


def naive_token_logps(h, w, y, b=None):
    import torch
    import torch.nn.functional as F

    z = F.linear(h, w, b).float()  # (B, T, V): the full logits
    logp = torch.log_softmax(z, dim=-1)
    nxt = torch.cat((y[:, 1:], torch.full_like(y[:, :1], -100)), dim=1)
    keep = nxt != -100
    return torch.where(keep, logp.gather(-1, torch.where(keep, nxt, 0).unsqueeze(-1)).squeeze(-1), 0.0)


def shifted(y):
    import torch

    return torch.cat((y[:, 1:], torch.full_like(y[:, :1], -100)), dim=1)


# ----------------------------------------------------------------------------- cases


def preference_cases(pairs, steps, hidden, vocab, dtype, device, gen, liger):
    import torch

    import lossviz.losses as L

    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    h = (make(2 * pairs, steps, hidden) / hidden ** 0.5).requires_grad_()
    w = make(vocab, hidden).requires_grad_()
    rh = make(2 * pairs, steps, hidden) / hidden ** 0.5
    rw = make(vocab, hidden)
    y = torch.randint(0, vocab, (2 * pairs, steps), generator=gen).to(device)
    y[:, : steps // 8] = -100  # a prompt
    n = pairs
    lens = (y[:, 1:] != -100).sum(-1).to(torch.float32)
    target = shifted(y)

    def naive_pairs(module, call):
        def fn():
            seq = naive_token_logps(h, w, y).sum(-1)
            return call(module, seq, lens)
        return fn

    def naive_ref():
        with torch.no_grad():
            return naive_token_logps(rh, rw, y).sum(-1)

    dpo = L.DPOLoss(0.1)
    fused_dpo = L.FusedLinearDPOLoss(0.1)
    cases = {
        "DPO": [
            ("naive", naive_pairs(dpo, lambda m, s, l: m(s[:n], s[n:], *naive_ref().split(n))), [h, w]),
            ("lossviz fused", lambda: fused_dpo(h, w, y, rh, rw), [h, w]),
        ],
        "SimPO": [
            ("naive", naive_pairs(L.SimPOLoss(2.0, 0.5), lambda m, s, l: m(s[:n], s[n:], l[:n], l[n:])), [h, w]),
            ("lossviz fused", lambda: L.FusedLinearSimPOLoss(2.0, 0.5)(h, w, y), [h, w]),
        ],
        "ORPO": [
            ("naive", naive_pairs(L.ORPOLoss(0.1), lambda m, s, l: m(s[:n], s[n:], l[:n], l[n:])), [h, w]),
            ("lossviz fused", lambda: L.FusedLinearORPOLoss(0.1)(h, w, y), [h, w]),
        ],
        "CPO": [
            ("naive", naive_pairs(L.CPOLoss(0.1, 1.0), lambda m, s, l: m(s[:n], s[n:], chosen_lengths=l[:n])), [h, w]),
            ("lossviz fused", lambda: L.FusedLinearCPOLoss(0.1, 1.0)(h, w, y), [h, w]),
        ],
    }
    if liger is not None:
        l_dpo = liger.LigerFusedLinearDPOLoss(beta=0.1)
        l_simpo = liger.LigerFusedLinearSimPOLoss(beta=2.0, gamma=0.5, compute_nll_loss=False)
        l_orpo = liger.LigerFusedLinearORPOLoss(beta=0.1)
        l_cpo = liger.LigerFusedLinearCPOLoss(beta=0.1, alpha=1.0)
        cases["DPO"].append(("liger", lambda: l_dpo(w, h, target, None, rh, rw), [h, w]))
        cases["SimPO"].append(("liger", lambda: l_simpo(w, h, target), [h, w]))
        cases["ORPO"].append(("liger", lambda: l_orpo(w, h, target), [h, w]))
        cases["CPO"].append(("liger", lambda: l_cpo(w, h, target), [h, w]))
    for name, impls in cases.items():
        yield f"{name} ({pairs}x{steps}/response)", impls


def kto_case(batch, steps, hidden, vocab, dtype, device, gen, liger):
    import torch

    import lossviz.losses as L

    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    h = (make(batch, steps, hidden) / hidden ** 0.5).requires_grad_()
    w = make(vocab, hidden).requires_grad_()
    rh = make(batch, steps, hidden) / hidden ** 0.5
    rw = make(vocab, hidden)
    y = torch.randint(0, vocab, (batch, steps), generator=gen).to(device)
    y[:, : steps // 8] = -100
    d = torch.arange(batch, device=device) % 2 == 0
    kl = torch.zeros(batch, device=device)
    kto = L.KTOLoss(0.1, 1.0, 1.0, 1, torch.device(device))

    def naive():
        seq = naive_token_logps(h, w, y).sum(-1)
        with torch.no_grad():
            ref = naive_token_logps(rh, rw, y).sum(-1)
        return kto(seq[d], seq[~d], kl, ref[d], ref[~d], kl)

    impls = [("naive", naive, [h, w]),
             ("lossviz fused", lambda: L.FusedLinearKTOLoss(0.1, 1.0, 1.0, 1, torch.device(device))(h, w, y, d, rh, rw, kl, kl), [h, w])]
    if liger is not None:
        l_kto = liger.LigerFusedLinearKTOLoss(beta=0.1, use_ref_model=True)
        target = shifted(y)
        impls.append(("liger", lambda: l_kto(h, w, target, None, d, rh, rw, None, torch.zeros((), device=device)), [h, w]))
    yield f"KTO ({batch}x{steps})", impls


def grpo_case(group, steps, hidden, vocab, dtype, device, gen, liger):
    import torch

    import lossviz.losses as L

    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    h = (make(group, steps, hidden) / hidden ** 0.5).requires_grad_()
    w = make(vocab, hidden).requires_grad_()
    y = torch.randint(0, vocab, (group, steps), generator=gen).to(device)
    y[:, : steps // 8] = -100
    with torch.no_grad():
        old = naive_token_logps(h, w, y) + 0.05 * torch.randn(group, steps, generator=gen).to(device)
    adv = L.group_advantages(torch.randn(group, generator=gen).to(device), group).unsqueeze(1)
    mask = shifted(y) != -100
    policy = L.PolicyLoss(0.2, loss_agg_mode="token-mean")
    fused = L.FusedLinearPolicyLoss(0.2, loss_agg_mode="token-mean")
    impls = [("naive", lambda: policy(naive_token_logps(h, w, y), old, adv, mask), [h, w]),
             ("lossviz fused", lambda: fused(h, w, y, old, adv), [h, w])]
    if liger is not None:
        l_grpo = liger.LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2)
        ids = torch.where(mask, shifted(y), 0)
        impls.append(("liger", lambda: l_grpo(h, w, ids, mask.long(), adv.squeeze(1), None, None, old), [h, w]))
    yield f"GRPO token-mean ({group}x{steps})", impls


def jsd_case(tokens, hidden, vocab, dtype, device, gen, liger):
    import torch
    import torch.nn.functional as F

    import lossviz.losses as L

    rows = 4
    steps = tokens // rows
    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    h = (make(rows, steps, hidden) / hidden ** 0.5).requires_grad_()
    w = make(vocab, hidden).requires_grad_()
    th = make(rows, steps, hidden) / hidden ** 0.5
    tw = make(vocab, hidden)
    y = torch.randint(0, vocab, (rows, steps), generator=gen).to(device)
    y[:, : steps // 8] = -100
    gkd = L.GKDLoss(0.5)

    def naive():
        with torch.no_grad():
            t = F.linear(th, tw)
        return gkd(F.linear(h, w), t, y)

    impls = [("naive", naive, [h, w]), ("lossviz fused", lambda: L.FusedLinearGKDLoss(0.5)(h, w, th, tw, y), [h, w])]
    if liger is not None:
        l_jsd = liger.LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.5)
        H = hidden
        impls.append(("liger", lambda: l_jsd(h.view(-1, H), w, th.view(-1, H), tw, y.view(-1)), [h, w]))
    yield f"GKD/JSD beta=0.5 ({tokens} tokens)", impls


def in_place_cases(tokens, vocab, dtype, device, gen, chunk):
    import torch

    from lossviz.losses import chunked_gptlm_loss, chunked_kd_loss

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_losses import seed_gptlm, seed_kd

    rows = 4
    steps = tokens // rows
    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    y = torch.randint(0, vocab, (rows, steps), generator=gen).to(device)
    y[:, : steps // 8] = -100
    base = make(rows, steps, vocab)
    teacher = make(rows, steps, vocab)
    logits = base.clone().requires_grad_()
    # in place: a fresh copy of the logits per call (outside the measured call), as lm_head would produce them
    fresh = {}

    def prepare():
        fresh["x"] = base.clone().requires_grad_()
        return [fresh["x"]]

    yield f"KD from logits ({tokens} tokens)", [
        ("seed (OpenRLHF)", lambda: seed_kd(logits, teacher, y), [logits]),
        (f"chunk={chunk}", lambda: chunked_kd_loss(logits, teacher, y, chunk), [logits]),
        (f"chunk={chunk} in place", lambda: chunked_kd_loss(fresh["x"], teacher, y, chunk, in_place=True), prepare),
    ]
    yield f"CE from logits ({tokens} tokens)", [
        ("seed (OpenRLHF)", lambda: seed_gptlm(logits, y), [logits]),
        (f"chunk={chunk}", lambda: chunked_gptlm_loss(logits, y, chunk), [logits]),
        (f"chunk={chunk} in place", lambda: chunked_gptlm_loss(fresh["x"], y, chunk, in_place=True), prepare),
    ]


# ----------------------------------------------------------------------------- measuring


def _leaves(spec):
    return spec() if callable(spec) else spec


def run_once(fn, spec, device):
    import torch

    leaves = _leaves(spec)
    for x in leaves:
        x.grad = None
    out = fn()
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return leaves


def measure(name, impls, args, tolerance):
    """First-call time, peak memory and gradients per implementation, then interleaved steady-state rounds."""
    import torch

    rows, kept = [], []
    for impl, fn, spec in impls:
        start = time.perf_counter()
        try:
            run_once(fn, spec, args.device)  # first call: Liger compiles here
        except Exception as exc:  # e.g. torch.compile failing on this machine: report and go on
            print(f"{name:<34} {impl:<22} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", flush=True)
            continue
        kept.append((impl, fn, spec))
        first = time.perf_counter() - start
        leaves = _leaves(spec)
        for x in leaves:
            x.grad = None
        del leaves
        leaves = _leaves(spec)  # the in-place rows take fresh logits before the meter starts
        with Meter(args.device) as meter:
            for x in leaves:
                x.grad = None
            out = fn()
            (out[0] if isinstance(out, tuple) else out).backward()
        grads = [x.grad.detach().double().clone() for x in leaves]
        for x in leaves:
            x.grad = None
        rows.append([impl, first, meter.peak, grads, []])
        del grads, leaves
    impls = kept
    for _ in range(args.repeat):
        for row, (impl, fn, spec) in zip(rows, impls):
            leaves = _leaves(spec)  # fresh in-place logits are made outside the timed region
            for x in leaves:
                x.grad = None
            start = time.perf_counter()
            out = fn()
            (out[0] if isinstance(out, tuple) else out).backward()
            if args.device == "cuda":
                torch.cuda.synchronize()
            row[4].append(time.perf_counter() - start)
            for x in leaves:
                x.grad = None
            del leaves, out
    base_time = statistics.median(rows[0][4])
    base_mem = rows[0][2]
    failures = 0
    for impl, first, peak, grads, times in rows:
        median = statistics.median(times)
        err = rel_err(grads, rows[0][3]) if impl != rows[0][0] else 0.0
        bad = err > tolerance
        failures += bad
        compile_s = max(first - median, 0.0)
        print(f"{name:<34} {impl:<22} {median * 1e3:>9.0f} {median / base_time:>7.2f} {compile_s:>9.1f} "
              f"{peak / 2**20:>9.0f} {peak / base_mem if base_mem > 0 else float('nan'):>7.2f} {err:>9.1e}"
              f"{'  DISAGREES' if bad else ''}", flush=True)
        torch.cuda.empty_cache() if args.device == "cuda" else None
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--pairs", type=int, default=4, help="pairs (DPO/SimPO/ORPO/CPO) and sequences/2 (KTO)")
    parser.add_argument("--steps", type=int, default=1024, help="tokens per response")
    parser.add_argument("--group", type=int, nargs=2, default=[8, 512], metavar=("G", "T"), help="GRPO group and length")
    parser.add_argument("--jsd-tokens", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=256, help="chunk of the from-logits rows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: 4 x 128 tokens per response, hidden 512, vocab 32000")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round (a check that the script runs)")
    parser.add_argument("--no-liger", action="store_true", help="leave Liger-Kernel out")
    parser.add_argument("--only", metavar="NAME", help="run only the losses whose row name starts with NAME")
    args = parser.parse_args(argv)
    if args.device == "cpu" and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD and argv is None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD  # freed tensors must leave the resident set
        # a private torch.compile cache: Liger's compile time is measured cold, and no other process's
        # half-written kernels are loaded
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_fused_inductor_"))
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.quick:
        args.vocab, args.hidden, args.steps, args.group, args.jsd_tokens = [32000], 512, 128, [8, 128], 1024
    if args.smoke:
        args.vocab, args.hidden, args.pairs, args.steps, args.group, args.jsd_tokens, args.repeat, args.chunk = \
            [300], 32, 2, 16, [4, 16], 64, 1, 16

    import torch

    liger = None if args.no_liger else _liger()
    dtype = getattr(torch, args.dtype)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    print(f"device {args.device}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"liger-kernel {'0.8.5' if liger is not None else 'absent'}; memory = extra peak beyond the inputs; "
          f"time = median of {args.repeat} interleaved rounds; compile = first call - median; "
          f"grad diff = relative to the naive form (tolerance {tolerance:g})")
    header = f"{'loss':<34} {'implementation':<22} {'time ms':>9} {'x naive':>7} {'compile s':>9} {'extra MB':>9} {'x naive':>7} {'grad diff':>9}"
    print(header)
    print("-" * len(header))
    failures = 0
    element = 4
    for vocab in args.vocab:
        gen = torch.Generator().manual_seed(0)
        tokens = 2 * args.pairs * args.steps
        need = 6 * element * tokens * vocab  # the naive form keeps a few [tokens, V] float32 tensors
        if need > 0.8 * available_bytes(args.device):
            print(f"(vocab {vocab}: skipped, the naive form needs ~{need / 2**30:.1f} GiB)")
            continue
        groups = [
            lambda: preference_cases(args.pairs, args.steps, args.hidden, vocab, dtype, args.device, gen, liger),
            lambda: kto_case(2 * args.pairs, args.steps, args.hidden, vocab, dtype, args.device, gen, liger),
            lambda: grpo_case(args.group[0], args.group[1], args.hidden, vocab, dtype, args.device, gen, liger),
            lambda: jsd_case(args.jsd_tokens, args.hidden, vocab, dtype, args.device, gen, liger),
            lambda: in_place_cases(args.jsd_tokens, vocab, dtype, args.device, gen, args.chunk),
        ]
        for group in groups:
            for name, impls in group():
                if args.only and not name.startswith(args.only):
                    continue
                failures += measure(f"{name} V={vocab}", impls, args, tolerance)
    print(f"gradient checks: {'all agree' if not failures else f'{failures} disagree'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
