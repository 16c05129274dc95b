"""DDP through the same training loop: two gloo processes on the CPU."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from basis.data import SyntheticConfig, SyntheticShapes
        from basis.models import RSIS, ModelConfig
        from basis.train import TrainConfig, train

        data = SyntheticShapes(SyntheticConfig(image_size=32), seed=0, ids=range(6))
        torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's weights
        model = RSIS(ModelConfig(hidden=16))
        ts = train(model, data, TrainConfig(epochs=1, iou_epochs=1, batch_size=2))
        torch.save({"model": ts.model.state_dict(), "history": ts.history},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_stay_in_sync(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for k, v in r0["model"].items():
        assert torch.allclose(v.float(), r1["model"][k].float(), atol=1e-6), k
    for h0, h1 in zip(r0["history"], r1["history"]):
        assert h0["loss"] == pytest.approx(h1["loss"])  # all-reduced
    assert r0["history"][1]["phase_iou"] == 1.0
