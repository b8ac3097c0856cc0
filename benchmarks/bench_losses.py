"""Production losses at LLM scale: lossviz (default, chunked, fused-linear) against OpenRLHF v0.5.3's loss code (the baseline).

One process, the same seeded inputs for every implementation. For each case it runs forward +
backward and reports:
- the median time;
- the *extra* peak memory beyond the inputs (the logits gradient counts), as a ratio to the
  OpenRLHF v0.5.3 form written below (the baseline);
- the relative gradient error against OpenRLHF v0.5.3 (float32: within 1e-5).

Memory: on CUDA, ``torch.cuda.max_memory_allocated``. On CPU, the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs``) with glibc's mmap threshold fixed at
64 KiB, so that every freed tensor goes back to the OS. The script re-executes itself with
``MALLOC_MMAP_THRESHOLD_`` set.

    python benchmarks/bench_losses.py                    # CPU, float32, tokens {1024, 4096} x vocab {32000, 128000}
    python benchmarks/bench_losses.py --device cuda --dtype bfloat16
    python benchmarks/bench_losses.py --smoke            # tiny sizes (the test suite runs this)
    python benchmarks/bench_losses.py --tokens --only PolicyLoss   # one small loss alone
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

MMAP_THRESHOLD = "65536"


# ----------------------------------------------------------------------------- OpenRLHF v0.5.3 forms (baseline)


def seed_gptlm(logits, labels):
    import torch.nn.functional as F

    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    return F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1), ignore_index=-100)


def seed_kd(logits, teacher_logits, label):
    import torch
    import torch.nn.functional as F

    teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float32)
    inf_mask = torch.isinf(logits)
    logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    prod_probs = torch.masked_fill(teacher_probs * logprobs, inf_mask, 0)
    x = torch.sum(prod_probs, dim=-1).view(-1)
    mask = (label != -100).int()
    return -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)


def seed_dpo(beta, pc, pr, rc, rr):
    import torch.nn.functional as F

    logits = (pc - pr) - (rc - rr)
    losses = -F.logsigmoid(beta * logits)
    return losses.mean(), beta * (pc - rc).detach(), beta * (pr - rr).detach()


def seed_kto(beta, pc, pr, pkl, rc, rr, rkl):
    import torch

    kl = (pkl - rkl).mean().detach().clamp(min=0)
    chosen = 1 - torch.sigmoid(beta * ((pc - rc) - kl))
    rejected = 1 - torch.sigmoid(beta * (kl - (pr - rr)))
    return torch.cat((chosen, 1.33 * rejected), 0).mean()


def seed_masked_mean(x, mask, dim):
    return (x * mask).sum(dim=dim) / mask.sum(dim=dim)


def seed_policy(log_probs, old_log_probs, advantages, mask):
    import torch

    ratio = (log_probs - old_log_probs).exp()
    surr1 = ratio * advantages
    surr2 = ratio.clamp(0.8, 1.2) * advantages
    return seed_masked_mean(-torch.min(surr1, surr2), mask, -1).mean()


def seed_value(values, old_values, returns, mask):
    import torch

    clipped = old_values + (values - old_values).clamp(-0.2, 0.2)
    loss = torch.max((clipped - returns) ** 2, (values - returns) ** 2)
    return 0.5 * seed_masked_mean(loss, mask, -1).mean()


class SeedModule:
    """Wrap a seed function in an nn.Module, as OpenRLHF's classes are (module-call overhead included)."""

    def __new__(cls, fn):
        from torch import nn

        class Seed(nn.Module):
            def forward(self, *args):
                return fn(*args)

        return Seed()


# ----------------------------------------------------------------------------- measuring


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class Meter:
    """Extra peak memory of a call beyond what is allocated when it starts."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset the peak RSS to the current RSS
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.peak = self.torch.cuda.max_memory_allocated() - self.base
        else:
            self.peak = _status_kib("VmHWM") * 1024 - self.base


def forward_backward(fn, leaves, device):
    import torch

    for x in leaves:
        x.grad = None
    loss = fn()
    loss = loss[0] if isinstance(loss, tuple) else loss
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()


def peak_and_grads(fn, leaves, device):
    """Extra peak bytes of one forward + backward (after a warm-up), and its gradients."""
    forward_backward(fn, leaves, device)  # warm-up
    for x in leaves:
        x.grad = None
    with Meter(device) as meter:
        forward_backward(fn, leaves, device)
    grads = [x.grad.detach().clone() for x in leaves]
    for x in leaves:
        x.grad = None
    return meter.peak, grads


def interleaved_times(impls, device, repeat):
    """Median seconds per implementation, timed in rounds (seed, lossviz, ..., seed, ...) so noise hits all alike."""
    times = [[] for _ in impls]
    for _ in range(repeat):
        for k, (_, fn, leaves) in enumerate(impls):
            start = time.perf_counter()
            forward_backward(fn, leaves, device)
            times[k].append(time.perf_counter() - start)
    for _, _, leaves in impls:
        for x in leaves:
            x.grad = None
    return [statistics.median(t) for t in times]


def rel_err(got, want):
    import torch

    num = max(float((g.double() - w.double()).abs().max()) for g, w in zip(got, want))
    den = max(float(w.double().abs().max()) for w in want) or 1.0
    return num / den


def available_bytes(device) -> int:
    import torch

    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------------------------- cases


def vocabulary_cases(tokens, vocab, hidden, dtype, device, chunk, gen):
    """(loss name, [(implementation, fn, leaves)], baseline name): GPTLM and KD, logits and fused forms."""
    import torch
    import torch.nn.functional as F

    from lossviz.losses import FusedLinearGPTLMLoss, FusedLinearKDLoss, GPTLMLoss, KDLoss

    rows = 4
    steps = tokens // rows
    make = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    labels = torch.randint(0, vocab, (rows, steps), generator=gen).to(device)
    labels[:, : steps // 8] = -100  # prompts
    logits = make(rows, steps, vocab).requires_grad_()
    teacher = make(rows, steps, vocab)
    seed_lm, seed_distil = SeedModule(seed_gptlm), SeedModule(seed_kd)
    yield "GPTLM", [
        ("openrlhf", lambda: seed_lm(logits, labels), [logits]),
        ("lossviz", lambda: GPTLMLoss()(logits, labels), [logits]),
        (f"lossviz chunk={chunk}", lambda: GPTLMLoss(chunk_size=chunk)(logits, labels), [logits]),
    ]
    yield "KD", [
        ("openrlhf", lambda: seed_distil(logits, teacher, labels), [logits]),
        ("lossviz", lambda: KDLoss()(logits, teacher, labels), [logits]),
        (f"lossviz chunk={chunk}", lambda: KDLoss(chunk_size=chunk)(logits, teacher, labels), [logits]),
    ]
    del logits, teacher
    h = (make(rows, steps, hidden) / hidden ** 0.5).requires_grad_()
    w = make(vocab, hidden).requires_grad_()
    h_t = make(rows, steps, hidden) / hidden ** 0.5
    w_t = make(vocab, hidden)
    yield f"GPTLM from hidden (H={hidden})", [
        ("openrlhf", lambda: seed_lm(F.linear(h, w), labels), [h, w]),
        (f"lossviz fused chunk={chunk}", lambda: FusedLinearGPTLMLoss(chunk_size=chunk)(h, w, labels), [h, w]),
    ]
    yield f"KD from hidden (H={hidden})", [
        ("openrlhf", lambda: seed_distil(F.linear(h, w), F.linear(h_t, w_t), labels), [h, w]),
        (f"lossviz fused chunk={chunk}", lambda: FusedLinearKDLoss(chunk_size=chunk)(h, w, h_t, w_t, labels), [h, w]),
    ]


def scalar_cases(dtype, device, gen, scale=1):
    import torch

    from lossviz.losses import DPOLoss, KTOLoss, PolicyLoss, ValueLoss

    make = lambda *shape: (torch.randn(*shape, generator=gen, dtype=torch.float32) * 3).to(device=device, dtype=dtype).requires_grad_()
    pairs, rows, steps = 256 * scale, 32 * scale, 2048  # a DPO/KTO batch of 256; PPO: 32 sequences x 2048 tokens
    pc, pr, rc, rr = (make(pairs) for _ in range(4))
    seed, ours = SeedModule(lambda *a: seed_dpo(0.1, *a)), DPOLoss(0.1)
    yield f"DPO ({pairs} pairs)", [("openrlhf", lambda: seed(pc, pr, rc, rr), [pc, pr]), ("lossviz", lambda: ours(pc, pr, rc, rr), [pc, pr])]
    kc, kr, kkl, krc, krr, krkl = make(pairs), make(pairs // 2), make(pairs), make(pairs), make(pairs // 2), make(pairs)
    seed_k, kto = SeedModule(lambda *a: seed_kto(0.1, *a)), KTOLoss(0.1, 1.0, 1.33, 1, torch.device(device))
    yield f"KTO ({pairs} + {pairs // 2})", [("openrlhf", lambda: seed_k(kc, kr, kkl, krc, krr, krkl), [kc, kr]), ("lossviz", lambda: kto(kc, kr, kkl, krc, krr, krkl), [kc, kr])]
    lp, old, adv = ((make(rows, steps) / 10).detach() for _ in range(3))
    lp.requires_grad_()
    mask = (torch.rand(rows, steps, generator=gen) > 0.2).to(device=device, dtype=dtype)
    seed_p, policy = SeedModule(seed_policy), PolicyLoss(0.2)
    yield f"PolicyLoss ({rows}x{steps})", [("openrlhf", lambda: seed_p(lp, old, adv, mask), [lp]), ("lossviz", lambda: policy(lp, old, adv, mask), [lp])]
    v, v_old, ret = (make(rows, steps) for _ in range(3))
    seed_v, value = SeedModule(seed_value), ValueLoss(0.2)
    yield f"ValueLoss ({rows}x{steps})", [("openrlhf", lambda: seed_v(v, v_old, ret, mask), [v]), ("lossviz", lambda: value(v, v_old, ret, mask), [v])]


# ----------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--tokens", type=int, nargs="*", default=[1024, 4096], help="token counts (none: only the small losses)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=256, help="tokens per chunk (default 256, as the library)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (a check that the script runs)")
    parser.add_argument("--only", metavar="NAME", help="run only the losses whose row name starts with NAME (e.g. PolicyLoss)")
    args = parser.parse_args(argv)
    if any(t < 8 for t in args.tokens):
        parser.error("--tokens: each count must be at least 8 (4 sequences of at least 2 tokens)")
    if args.device == "cpu" and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD and argv is None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD  # freed tensors must leave the resident set
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.smoke:
        args.tokens, args.vocab, args.hidden, args.chunk, args.repeat = [64], [500], 32, 16, 1

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    dtype = getattr(torch, args.dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    print(f"device {args.device}, dtype {args.dtype}, torch {torch.__version__}; memory = extra peak beyond the inputs; "
          f"gradients checked against OpenRLHF v0.5.3 to {tolerance:g} (relative)")
    header = f"{'loss':<28} {'tokens':>6} {'vocab':>6} {'implementation':<24} {'time ms':>9} {'x base':>7} {'extra MB':>9} {'x base':>7} {'grad err':>9}"
    print(header)
    print("-" * len(header))
    failures = 0
    element = torch.finfo(dtype).bits // 8
    for tokens in args.tokens:
        for vocab in args.vocab:
            # OpenRLHF's KD keeps about 6 [tokens, vocab] float32 tensors alive at once, plus two inputs
            need = (6 * 4 + 3 * element) * tokens * vocab
            if need > 0.8 * available_bytes(args.device):
                print(f"{'(skipped: needs ~' + format(need / 2**30, '.1f') + ' GiB)':<28} {tokens:>6} {vocab:>6}")
                continue
            gen = torch.Generator().manual_seed(0)
            for name, impls in vocabulary_cases(tokens, vocab, args.hidden, dtype, args.device, args.chunk, gen):
                if not args.only or name.startswith(args.only):
                    failures += report(name, tokens, vocab, impls, args, tolerance)
    gen = torch.Generator().manual_seed(1)
    for name, impls in scalar_cases(dtype, args.device, gen):
        if not args.only or name.startswith(args.only):
            failures += report(name, "", "", impls, args, tolerance, repeat=200 if not args.smoke else 1)
    print(f"gradient checks: {'all agree' if not failures else f'{failures} disagree'}")
    return 1 if failures else 0


def report(name, tokens, vocab, impls, args, tolerance, repeat=None):
    measured = [peak_and_grads(fn, leaves, args.device) for _, fn, leaves in impls]
    seconds = interleaved_times(impls, args.device, repeat or args.repeat)
    base_mem, base_grads = measured[0]
    failures = 0
    for k, (impl, _, _) in enumerate(impls):
        peak, grads = measured[k]
        err = rel_err(grads, base_grads) if k else 0.0
        failures += err > tolerance
        mem_ratio = peak / base_mem if base_mem and base_mem > 0 else float("nan")
        print(f"{name:<28} {tokens!s:>6} {vocab!s:>6} {impl:<24} {seconds[k] * 1e3:>9.2f} {seconds[k] / seconds[0]:>7.2f} "
              f"{peak / 2**20:>9.1f} {mem_ratio:>7.2f} {err:>9.1e}{'  DISAGREES' if err > tolerance else ''}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
