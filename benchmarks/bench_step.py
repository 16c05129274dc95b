"""RSIS training step vs the encoder alone.

Measures one training step of IoU-W-RSIS (forward, the full RSIS loss with Hungarian
matching, backward, fused Adam — what `basis.train` does per batch, joint schedule:
every loss term, every parameter) against the floor of a step of its ResNet encoder
alone (forward, a trivial loss on its five feature maps, backward, fused Adam over the
encoder), on the same batch of synthetic images. ratio = RSIS step / encoder step: what
the recurrent decoder, the T steps and the loss cost on top of the backbone.

With ``--cuda-variants`` on a CUDA machine it also measures the step in fp32 vs bf16
autocast + channels_last, and DDP on 1 GPU vs all GPUs (same per-GPU batch; the ratio
is the scaling efficiency). On a machine without CUDA those are skipped with a line.

    python benchmarks/bench_step.py                 # 64 and 128 px, batch 8
    python benchmarks/bench_step.py --tiny          # seconds (CI smoke)
    python benchmarks/bench_step.py --cuda-variants # on a GPU node
    python benchmarks/bench_step.py --threads 1     # steadier on a machine shared with other work
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, machine_line, med, median_ratio, ratio_line  # noqa: E402

import torch  # noqa: E402

from basis.data.synthetic import SyntheticConfig, SyntheticShapes, collate  # noqa: E402
from basis.losses import LossConfig, class_sequence, rsis_loss  # noqa: E402
from basis.models.rsis import RSIS, ModelConfig, RSISOutput  # noqa: E402
from basis.train import TrainConfig, make_optimizer  # noqa: E402

N_CLASSES = 20


def make_batch(size: int, batch: int, device: torch.device, seed: int = 0) -> dict:
    """A collated synthetic batch with its W-RSIS class sequence, on ``device``.

    Returns:
        `collate` output plus ``class_seq`` (B, T) long; images (B, 3, size, size).
    """
    data = SyntheticShapes(SyntheticConfig(image_size=size, n_classes=N_CLASSES), seed,
                           range(batch))
    b = collate([data[i] for i in range(batch)])
    steps = max(1, max(int(lab.numel()) for lab in b["labels"]))
    b["class_seq"] = class_sequence(b["labels"], b["masks"], steps).to(device)
    b["images"] = b["images"].to(device)
    for key in ("masks", "labels", "ignore"):
        b[key] = [t.to(device) for t in b[key]]
    return b


def _float_out(out: RSISOutput) -> RSISOutput:
    """The loss runs in fp32 outside autocast (the matching goes through numpy)."""
    return RSISOutput(out.mask_logits.float(), out.class_logits.float(),
                      out.stop_logits.float(), out.iou.float(),
                      None if out.iou_features is None else out.iou_features.float())


class RSISStep:
    """One IoU-W-RSIS training step on a fixed batch (the body of `basis.train`'s epoch)."""

    def __init__(self, model: torch.nn.Module, batch: dict, autocast: torch.dtype | None = None,
                 channels_last: bool = False, core: torch.nn.Module | None = None) -> None:
        self.model, self.batch, self.autocast = model, batch, autocast
        core = core or model                      # the unwrapped RSIS under DDP
        self.opt = make_optimizer(core, TrainConfig())
        self.loss_cfg = LossConfig()
        self.images = batch["images"]
        if channels_last:
            self.images = self.images.contiguous(memory_format=torch.channels_last)

    def __call__(self) -> float:
        dev = self.images.device.type
        with torch.autocast(dev, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            out = self.model(self.images, self.batch["class_seq"])
        loss, _ = rsis_loss(_float_out(out), self.batch, self.loss_cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


class EncoderStep:
    """The floor: forward + backward + fused Adam of the encoder alone on the same images."""

    def __init__(self, model: RSIS, batch: dict) -> None:
        self.model, self.images = model, batch["images"]
        params = model.encoder_parameters()
        fused = self.images.device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(params, lr=1e-3, fused=fused or None)

    def __call__(self) -> float:
        m = self.model
        feats = m.encoder((self.images - m.mean) / m.std)
        loss = sum(f.float().mean() for f in feats)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def _repeat(fn, n: int):
    def run() -> None:
        for _ in range(n):
            fn()
    return run


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else None


def bench_size(size: int, batch: int, hidden: int, steps: int, repeats: int,
               device: torch.device) -> dict[str, float]:
    """Median seconds per step of each, img/s, and the median per-repeat ratio."""
    torch.manual_seed(0)
    model = RSIS(ModelConfig(hidden=hidden, n_classes=N_CLASSES), seed=0).to(device).train()
    b = make_batch(size, batch, device)
    rsis, enc = RSISStep(model, b), EncoderStep(model, b)
    for _ in range(2):                       # warm-up: allocator, kernels, Adam state
        enc()
        rsis()
    f, s = interleaved(_repeat(enc, steps), _repeat(rsis, steps), repeats, _sync(device))
    enc_s, rsis_s = med(f) / steps, med(s) / steps
    return {"enc_s": enc_s, "rsis_s": rsis_s, "enc_ips": batch / enc_s,
            "rsis_ips": batch / rsis_s, "ratio": median_ratio(s, f)}


# --------------------------------------------------------------------------- CUDA ---
def bench_precision(size: int, batch: int, hidden: int, steps: int, repeats: int,
                    device: torch.device) -> None:
    """fp32 vs bf16 autocast + channels_last, interleaved, two copies of one model."""
    torch.manual_seed(0)
    fp32 = RSIS(ModelConfig(hidden=hidden, n_classes=N_CLASSES), seed=0).to(device).train()
    bf16 = RSIS(ModelConfig(hidden=hidden, n_classes=N_CLASSES), seed=0).to(device).train()
    bf16 = bf16.to(memory_format=torch.channels_last)
    b = make_batch(size, batch, device)
    a = RSISStep(fp32, b)
    c = RSISStep(bf16, b, autocast=torch.bfloat16, channels_last=True)
    for _ in range(3):
        a()
        c()
    f, s = interleaved(_repeat(a, steps), _repeat(c, steps), repeats, _sync(device))
    print(f"  {size:4d} px  fp32 {med(f) / steps * 1e3:8.1f} ms/step "
          f"({batch * steps / med(f):7.1f} img/s)   bf16+channels_last "
          f"{med(s) / steps * 1e3:8.1f} ms/step ({batch * steps / med(s):7.1f} img/s)")
    print(ratio_line(f"bf16_channels_last_vs_fp32_{size}px", median_ratio(s, f),
                     "bf16 autocast + channels_last step time / fp32 step time; < 1 is faster"))


def _ddp_worker(rank: int, world: int, size: int, batch: int, hidden: int, steps: int,
                repeats: int, backend: str, port: int, queue) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
            device = torch.device("cuda", rank)
        else:
            device = torch.device("cpu")
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        model = RSIS(ModelConfig(hidden=hidden, n_classes=N_CLASSES), seed=0).to(device).train()
        wrapped = DistributedDataParallel(model, device_ids=[rank] if backend == "nccl" else None)
        step = RSISStep(wrapped, make_batch(size, batch, device, seed=rank), core=model)
        for _ in range(2):
            step()
        times = []
        for _ in range(repeats):
            dist.barrier()
            from _common import clock

            times.append(clock(_repeat(step, steps), _sync(device)))
        if rank == 0:
            queue.put(med(times) / steps)
    finally:
        dist.destroy_process_group()


def ddp_step_time(world: int, size: int, batch: int, hidden: int, steps: int, repeats: int,
                  backend: str) -> float:
    """Median seconds per step of rank 0 in a ``world``-process DDP job."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(world, size, batch, hidden, steps, repeats, backend,
                                          port, queue), nprocs=world, start_method="spawn")
    return queue.get()


def bench_ddp(world: int, size: int, batch: int, hidden: int, steps: int, repeats: int,
              backend: str) -> None:
    """DDP at 1 vs ``world`` processes at the same per-process batch → scaling efficiency.

    The two runs are separate process groups (one cannot shrink a group), one after
    the other; efficiency = (world·batch/t_world) / (world · batch/t_1) = t_1 / t_world.
    """
    t1 = ddp_step_time(1, size, batch, hidden, steps, repeats, backend)
    tn = ddp_step_time(world, size, batch, hidden, steps, repeats, backend)
    print(f"  {size:4d} px  DDP x1 {t1 * 1e3:8.1f} ms/step ({batch / t1:7.1f} img/s)   "
          f"DDP x{world} {tn * 1e3:8.1f} ms/step ({world * batch / tn:7.1f} img/s total)")
    print(ratio_line(f"ddp_{world}_vs_1_scaling_{size}px", t1 / tn,
                     f"throughput of {world} processes / ({world} × throughput of 1); 1 = linear"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="run in seconds (CI smoke)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64, help="decoder width H")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--cuda-variants", action="store_true",
                    help="on CUDA: fp32 vs bf16+channels_last, DDP 1 vs all GPUs")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, one per core)")
    ap.add_argument("--ddp-cpu", type=int, default=0, metavar="N",
                    help="(checks the DDP code path without a GPU) gloo DDP, 1 vs N CPU processes")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([32] if args.tiny else [64, 128])
    steps = args.steps or (1 if args.tiny else 4)
    repeats = args.repeats or (2 if args.tiny else 5)
    hidden = 16 if args.tiny else args.hidden
    batch = 4 if args.tiny else args.batch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(machine_line(str(device)))
    print(f"setup: IoU-W-RSIS resnet18 H={hidden}, batch {batch}, {steps} steps x {repeats} "
          f"repeats (interleaved), medians")
    for size in sizes:
        r = bench_size(size, batch, hidden, steps, repeats, device)
        print(f"  {size:4d} px  RSIS step {r['rsis_s'] * 1e3:8.1f} ms ({r['rsis_ips']:7.1f} img/s)"
              f"   encoder step {r['enc_s'] * 1e3:8.1f} ms ({r['enc_ips']:7.1f} img/s)")
        print(ratio_line(f"rsis_vs_encoder_step_{size}px", r["ratio"],
                         "RSIS training step time / encoder-only step time"))
    if args.cuda_variants:
        if not torch.cuda.is_available():
            print("cuda-variants: skipped, no CUDA device on this machine "
                  "(fp32 vs bf16+channels_last and DDP 1 vs all GPUs need one)")
        else:
            for size in sizes:
                bench_precision(size, batch, hidden, steps, repeats, device)
            n = torch.cuda.device_count()
            if n < 2:
                print(f"ddp: skipped, {n} GPU (needs 2 or more to compare 1 vs all)")
            else:
                for size in sizes:
                    bench_ddp(n, size, batch, hidden, steps, repeats, "nccl")
    if args.ddp_cpu:
        for size in sizes:
            bench_ddp(args.ddp_cpu, size, batch, hidden, steps, repeats, "gloo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
