"""What keeping a masked NaN out of PolicyLoss costs, and the time of every policy_loss_type.

One process, the same seeded inputs for every implementation, forward + backward, medians of
interleaved rounds, timed as the CPU time of the calling thread with one torch thread (on a
shared machine the wall clock is bimodal; on CUDA the wall clock after a synchronize). Every time is printed as a ratio to the
baseline, OpenRLHF v0.5.3's PolicyLoss form (which multiplies by the mask, so a NaN at a masked
position reaches its loss). Rows:

- ``ppo (where)``: lossviz's default PolicyLoss, which selects masked positions away with
  ``torch.where`` before use (a NaN/inf there never reaches the loss or the gradient);
- ``ppo (multiply)``: the same module with that selection turned off (``_select_masked=False``),
  i.e. what the guard costs is the ratio of these two rows;
- one row per ``policy_loss_type`` with the guard (the default), and the verl aggregation modes.

    python benchmarks/bench_rl.py                     # CPU, float32, 32 x 2048 tokens, 200 rounds
    python benchmarks/bench_rl.py --device cuda --dtype bfloat16
    python benchmarks/bench_rl.py --smoke             # tiny sizes, a few rounds
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_losses import SeedModule, forward_backward, rel_err, seed_policy  # noqa: E402


def interleaved_cpu_times(impls, device, repeat):
    """Median CPU seconds of the calling thread per implementation, in interleaved rounds.

    With one torch thread the work runs in this thread, so its CPU time does not count the time
    the machine spends on other processes (wall-clock medians on a loaded 2-core machine are
    bimodal). On CUDA the wall clock is used (the work is on the device)."""
    import statistics
    import time

    clock = time.perf_counter if device == "cuda" else time.thread_time
    times = [[] for _ in impls]
    for _ in range(repeat):
        for k, (_, fn, leaves) in enumerate(impls):
            start = clock()
            forward_backward(fn, leaves, device)
            times[k].append(clock() - start)
    for _, _, leaves in impls:
        for x in leaves:
            x.grad = None
    return [statistics.median(t) for t in times]


def cases(rows, steps, dtype, device, seed=0):
    import torch

    from lossviz.losses import POLICY_LOSS_TYPES, PolicyLoss

    gen = torch.Generator().manual_seed(seed)
    make = lambda: (torch.randn(rows, steps, generator=gen) * 0.3).to(device=device, dtype=dtype)
    lp, old, adv = make().requires_grad_(), make(), make() * 10
    mask = (torch.rand(rows, steps, generator=gen) > 0.2).to(device=device, dtype=dtype)
    baseline = SeedModule(seed_policy)
    guarded = PolicyLoss(0.2)
    unguarded = PolicyLoss(0.2)
    unguarded._select_masked = False
    impls = [
        ("openrlhf v0.5.3 (baseline)", lambda: baseline(lp, old, adv, mask), [lp]),
        ("ppo (where)", lambda: guarded(lp, old, adv, mask), [lp]),
        ("ppo (multiply)", lambda: unguarded(lp, old, adv, mask), [lp]),
    ]
    for kind in POLICY_LOSS_TYPES[1:]:
        module = PolicyLoss(0.2, policy_loss_type=kind)
        impls.append((kind, lambda m=module: m(lp, old, adv, mask), [lp]))
    for mode in ("token-mean", "seq-mean-token-sum-norm"):
        module = PolicyLoss(0.2, loss_agg_mode=mode)
        impls.append((f"ppo, {mode}", lambda m=module: m(lp, old, adv, mask), [lp]))
    metrics = PolicyLoss(0.2)
    impls.append(("ppo, return_metrics=True", lambda: metrics(lp, old, adv, mask, return_metrics=True), [lp]))
    return impls, (lp, old, adv, mask)


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 by default: on a shared machine more threads make the medians bimodal)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 3 rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.rows, args.steps, args.repeat = 2, 16, 3
    dtype = getattr(torch, args.dtype)
    impls, (lp, old, adv, mask) = cases(args.rows, args.steps, dtype, args.device)
    # the guard changes nothing on finite inputs: same gradients as the baseline
    grads = []
    for _, fn, leaves in impls[:3]:
        leaves[0].grad = None
        out = fn()
        (out[0] if isinstance(out, tuple) else out).backward()
        grads.append(leaves[0].grad.detach().clone())
        leaves[0].grad = None
    err = max(rel_err([g], [grads[0]]) for g in grads[1:])
    seconds = interleaved_cpu_times(impls, args.device, args.repeat)
    base = seconds[0]
    print(f"PolicyLoss forward + backward, {args.rows} x {args.steps} tokens, {args.dtype}, {args.device}, "
          f"torch {torch.__version__}, {args.threads} thread(s), median CPU time of {args.repeat} interleaved rounds")
    print(f"gradient of ppo (where / multiply) vs the baseline: max relative error {err:.1e}")
    print(f"{'implementation':<30} {'ms':>9} {'x baseline':>11}")
    for (name, _, _), s in zip(impls, seconds):
        print(f"{name:<30} {s * 1e3:9.3f} {s / base:11.2f}")
    where, multiply = seconds[1], seconds[2]
    print(f"cost of keeping a masked NaN out (where / multiply): {where / multiply:.2f}")
    # and the guard works: a NaN at a masked position
    from lossviz.losses import PolicyLoss

    poisoned = lp.detach().clone()
    poisoned[mask == 0] = float("nan")
    poisoned.requires_grad_()
    loss = PolicyLoss(0.2)(poisoned, old, adv, mask)
    (g,) = torch.autograd.grad(loss, [poisoned])
    print(f"NaN at masked positions: loss finite {bool(torch.isfinite(loss))}, gradient finite {bool(torch.isfinite(g).all())}")


if __name__ == "__main__":
    main()
