"""Memory and time of a pool kept in an image store (memory-mapped on disk) against one held in memory.

    python bench/bench_image_store.py [--sizes 10000 100000 1000000] [--image-size 64] [--width 8] [--steps 40]
                                      [--folder /tmp/alvae_store_bench] [--threads 1]

For each pool size, ``SyntheticSource`` (``train_size`` images of ``image_size`` px, one channel) is streamed once
into an ``ImageStore`` (the build's time and rate are printed; an existing store is reused). Then, each in a fresh
process so that one measurement's memory does not leak into the next, the pool is opened through the store
(``memory_cap_gb=0``) or, where it fits (``--memory-limit-gb``), read into memory, and:

- ``epoch``: training steps of ``TaskModel`` (ResNet-18 of base ``--width``, SGD) on shuffled batches of 128 drawn
  from the whole pool, as the loop's ``SeededBatchSampler`` draws them (random rows: the store's worst case,
  every batch touches pages all over the file); ``--steps`` batches are timed after 3 warm-up batches and the
  epoch's time is extrapolated to the pool (``steps`` x pool / 128);
- ``embedding``: ``forward_features`` over consecutive batches of 512 in eval mode, as acquisition embeds the
  pool; ``--steps`` batches timed, extrapolated to the pool likewise. Pools of at most 10,000 images are passed
  over whole and nothing is extrapolated.

Memory, read from ``/proc/self/status`` at the end: ``private`` is ``RssAnon``, the process's own memory (what the
pool costs when held in memory); ``peak RSS`` is ``VmHWM``, which also counts the store's pages while they are
mapped, although the kernel reclaims them under pressure like any file cache. The table shows that the private
memory of a stored pool does not grow with it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from alvae_pl.data.image_store import ImageStore, source_fingerprint  # noqa: E402
from alvae_pl.data.sources import SyntheticSource  # noqa: E402

BATCH, EVAL_BATCH, WARMUP = 128, 512, 3


def source_for(size: int, image_size: int) -> SyntheticSource:
    return SyntheticSource(train_size=size, val_size=100, test_size=0, image_size=image_size)


def build(size: int, image_size: int, folder: Path) -> tuple[float, bool]:
    """Streams the pool into its store; returns the seconds it took and whether it was built now."""
    source = source_for(size, image_size)
    plan, read = source.plan_rows()
    store = ImageStore(folder, source_fingerprint(source, plan))
    if store.complete:
        return 0.0, False
    start = time.perf_counter()
    store.build(plan, read, progress=False)
    return time.perf_counter() - start, True


def measure(size: int, image_size: int, folder: str, mode: str, width: int, steps: int, threads: int) -> dict:
    """One measurement, in this process (run it in a fresh one)."""
    from alvae_pl.data.batching import SeededBatchSampler
    from alvae_pl.data.image_store import load_through_store
    from alvae_pl.models.task_model import TaskModel

    torch.set_num_threads(threads)
    source = source_for(size, image_size)
    data = load_through_store(source, folder, memory_cap_gb=0 if mode == "store" else 1e9, progress=False)
    images, targets = data.train.images, data.train.targets
    model = TaskModel(num_classes=10, num_channels=1, image_size=image_size, weights=None, width=width, lr=0.01)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    whole = size <= 10_000

    batches = list(SeededBatchSampler(size, BATCH, shuffle=True, seed=0))
    timed = batches if whole else batches[: WARMUP + steps]
    model.train()
    for index, rows in enumerate(timed):
        if index == WARMUP or (whole and index == 0):
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images[rows]), targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    done = len(timed) - (0 if whole else WARMUP)
    epoch = (time.perf_counter() - start) / done * len(batches)

    eval_batches = list(torch.arange(size).split(EVAL_BATCH))
    timed = eval_batches if whole else eval_batches[: WARMUP + steps]
    model.eval()
    with torch.no_grad():
        for index, rows in enumerate(timed):
            if index == WARMUP or (whole and index == 0):
                start = time.perf_counter()
            model.forward_features(images[rows])
    done = len(timed) - (0 if whole else WARMUP)
    embedding = (time.perf_counter() - start) / done * len(eval_batches)

    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "private_mib": int(status["RssAnon"].split()[0]) / 1024,
        "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024,
        "epoch_s": epoch,
        "embedding_s": embedding,
        "extrapolated": not whole,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 base width (64: the real one)")
    parser.add_argument("--steps", type=int, default=40, help="batches timed per pass for pools above 10,000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/alvae_store_bench"))
    parser.add_argument("--memory-limit-gb", type=float, default=2.0, help="largest pool also measured in memory")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.measure:
        size, mode = args.measure.split(":")
        folder = str(args.folder / f"pool_{size}")
        print(json.dumps(measure(int(size), args.image_size, folder, mode, args.width, args.steps, args.threads)))
        return

    print(f"pools of {args.image_size}-px grayscale images; ResNet-18 width {args.width}; {args.threads} thread(s)")
    header = "| pool | kept | store build (s, img/s) | private MiB | peak RSS MiB | epoch (s) | embedding pass (s) |"
    print(header)
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        seconds, built = build(size, args.image_size, args.folder / f"pool_{size}")
        pool_gib = size * args.image_size**2 / 2**30
        modes = ["store"] + (["memory"] if pool_gib <= args.memory_limit_gb else [])
        for mode in modes:
            command = [sys.executable, __file__, "--measure", f"{size}:{mode}", "--image-size", str(args.image_size),
                       "--width", str(args.width), "--steps", str(args.steps), "--threads", str(args.threads),
                       "--folder", str(args.folder)]  # fmt: skip
            result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            mark = " (extrapolated)" if result["extrapolated"] else ""
            build_text = f"{seconds:.0f} ({size / seconds:,.0f})" if built and mode == "store" else "-"
            print(
                f"| {size:,} | {mode} | {build_text} | {result['private_mib']:,.0f} | {result['peak_rss_mib']:,.0f} "
                f"| {result['epoch_s']:,.1f}{mark} | {result['embedding_s']:,.1f}{mark} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
