"""Pool scoring throughput: `basis.infer.predict` vs the network's forward pass alone.

Scoring the pool (the init stage's job) is `predict` on every pool image: W-RSIS
forward with the weak labels, class/stop scores, binarised masks RLE-encoded, the
predicted IoU, and the true IoU against the ground truth (for the oracle). The floor
is the forward pass alone, in ``no_grad`` and eval mode, on the same pre-collated
batches. Both read images already drawn (the synthetic drawing, ~2 ms per 128 px
image, is not part of either). ratio = predict time / forward time: the cost of
everything `predict` does besides the network.

    python benchmarks/bench_scoring.py          # 64 images of 64 and 128 px, batch 16
    python benchmarks/bench_scoring.py --tiny   # seconds (CI smoke)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, machine_line, med, median_ratio, ratio_line  # noqa: E402

import torch  # noqa: E402

from basis.data.synthetic import SyntheticConfig, SyntheticShapes, collate  # noqa: E402
from basis.infer import predict, weak_class_sequence  # noqa: E402
from basis.models.rsis import RSIS, ModelConfig  # noqa: E402

N_CLASSES = 20


def bench_size(size: int, n_images: int, batch: int, hidden: int, repeats: int,
               device: torch.device) -> dict[str, float]:
    data = SyntheticShapes(SyntheticConfig(image_size=size, n_classes=N_CLASSES), 0,
                           range(n_images))
    samples = [data[i] for i in range(n_images)]      # drawn once, outside the timing
    model = RSIS(ModelConfig(hidden=hidden, n_classes=N_CLASSES), seed=0).to(device).eval()
    batches = []
    for i in range(0, n_images, batch):
        b = collate(samples[i:i + batch])
        batches.append((b["images"].to(device), weak_class_sequence(b["labels"]).to(device)))
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    @torch.no_grad()
    def forward() -> None:
        for images, class_seq in batches:
            model(images, class_seq)

    def score() -> None:
        preds = predict(model, samples, batch_size=batch, device=device)
        assert len(preds) == n_images

    forward()
    score()                                            # warm-up
    f, s = interleaved(forward, score, repeats, sync)
    return {"fwd_ips": n_images / med(f), "pred_ips": n_images / med(s),
            "ratio": median_ratio(s, f)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="run in seconds (CI smoke)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    sizes = args.sizes or ([32] if args.tiny else [64, 128])
    n_images = 16 if args.tiny else args.images
    hidden = 16 if args.tiny else args.hidden
    repeats = args.repeats or (2 if args.tiny else 5)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(machine_line(str(device)))
    print(f"setup: IoU-W-RSIS resnet18 H={hidden}, {n_images} pool images, batch {args.batch}, "
          f"{repeats} repeats (interleaved), medians")
    for size in sizes:
        r = bench_size(size, n_images, args.batch, hidden, repeats, device)
        print(f"  {size:4d} px  predict {r['pred_ips']:7.1f} img/s   forward only "
              f"{r['fwd_ips']:7.1f} img/s")
        print(ratio_line(f"predict_vs_forward_{size}px", r["ratio"],
                         "basis.infer.predict time / no_grad forward time, same images"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
