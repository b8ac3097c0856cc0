"""KTOLoss across two real processes (gloo on loopback): the KL reference point is the ranks' mean."""

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import references as ref

WORLD = 2


def _shard(rank):
    gen = torch.Generator().manual_seed(100 + rank)
    sizes = [(3, 2, 5), (1, 4, 3)][rank]  # uneven sides and KL batches per rank
    shard = [torch.randn(n, generator=gen, dtype=torch.float64) * 4 for n in sizes * 2]
    shard[2] = shard[2] + 3.0 * (rank + 1)  # policy KL log-probs above the reference: a positive, rank-dependent KL
    return shard


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from lossviz.losses import KTOLoss

        args = [t.clone().requires_grad_() for t in _shard(rank)]
        loss, _, _, kl = KTOLoss(0.1, 1.0, 1.33, WORLD, torch.device("cpu"))(*args)
        grads = torch.autograd.grad(loss, [args[0], args[1]])
        torch.save({"loss": loss.detach(), "kl": kl, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_kto_kl_is_mean_over_ranks(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    shards = [_shard(r) for r in range(WORLD)]
    local_kls = [(s[2] - s[5]).mean() for s in shards]
    expected_kl = torch.clamp(sum(local_kls) / WORLD, min=0)
    assert expected_kl > 0  # the data make the clamp inactive, so the mean itself is tested
    for rank, (res, shard) in enumerate(zip(results, shards)):
        assert res["kl"].item() == pytest.approx(expected_kl.item(), rel=1e-12)
        assert res["kl"].item() != pytest.approx(local_kls[rank].item(), rel=1e-3)  # not the local KL
        # the same loss and gradients as one process handed that KL
        leaves = [t.clone().requires_grad_() for t in shard]
        loss, *_ = ref.kto(0.1, 1.0, 1.33, *leaves, kl=expected_kl)
        grads = torch.autograd.grad(loss, [leaves[0], leaves[1]])
        assert res["loss"].item() == pytest.approx(loss.item(), rel=1e-10)
        for g, rg in zip(res["grads"], grads):
            torch.testing.assert_close(g, rg, rtol=1e-10, atol=1e-14)


def test_kto_without_process_group_uses_local_kl():
    from lossviz.losses import KTOLoss

    assert not dist.is_initialized()
    s = _shard(0)
    *_, kl = KTOLoss(0.1, 1.0, 1.0, 8, torch.device("cpu"))(*s)
    assert kl.item() == pytest.approx(max(0.0, (s[2] - s[5]).mean().item()), rel=1e-14)
