"""The disk-backed image store: the same images as memory, memory that does not grow with the pool, a build that
resumes after an interruption, a store of other settings refused, and a run through it equal to one in memory."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from alvae_pl.data.image_data import ImageData
from alvae_pl.data.image_store import CHUNK_ROWS, ImageStore, load_through_store, source_fingerprint
from alvae_pl.data.sources import DigitsSource, SyntheticSource
from tests.helpers.cli_runs import REPOSITORY, first_acquisition, read_csv, without_timings


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_a_streamed_store_holds_what_memory_holds_and_is_reused(tmp_path: Path) -> None:
    source = SyntheticSource(train_size=2_500, val_size=150, test_size=40, image_size=32, channels=3)
    in_memory = source.load()
    stored = load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(stored, split).images, getattr(in_memory, split).images)
        assert torch.equal(getattr(stored, split).targets, getattr(in_memory, split).targets)
    assert (stored.task, stored.class_names) == (in_memory.task, in_memory.class_names)

    # A later run opens the finished store without generating (reading) a single image.
    class Counting(SyntheticSource):
        reads = 0

        def image(self, split: str, row: int) -> np.ndarray:
            Counting.reads += 1
            return super().image(split, row)

    counting = Counting(train_size=2_500, val_size=150, test_size=40, image_size=32, channels=3)
    counting_store = load_through_store(counting, tmp_path / "counting", memory_cap_gb=0, progress=False)
    assert Counting.reads == 2_690
    again = load_through_store(counting, tmp_path / "counting", memory_cap_gb=0, progress=False)
    assert Counting.reads == 2_690 and torch.equal(again.train.images, counting_store.train.images)


def test_under_the_memory_cap_the_images_stay_in_memory_and_no_store_is_written(tmp_path: Path) -> None:
    source = SyntheticSource(train_size=100, val_size=10, test_size=10, image_size=16)
    data = load_through_store(source, tmp_path / "store", memory_cap_gb=1, progress=False)
    assert len(data.train) == 100 and not (tmp_path / "store").exists()


def test_a_source_that_reads_everything_at_once_is_written_once_then_mapped(tmp_path: Path) -> None:
    digits = DigitsSource()
    in_memory = digits.load()
    stored = load_through_store(digits, tmp_path / "store", memory_cap_gb=0, progress=False)
    assert torch.equal(stored.train.images, in_memory.train.images)
    assert torch.equal(stored.val.targets, in_memory.val.targets)
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert meta["fingerprint"]["source"] == "alvae_pl.data.sources.digits_source.DigitsSource"
    assert meta["written"] == meta["rows"] == {"train": 1257, "val": 270, "test": 270}


def test_an_interrupted_build_continues_where_its_last_chunk_ended(tmp_path: Path) -> None:
    source = SyntheticSource(train_size=3 * CHUNK_ROWS + 100, val_size=20, test_size=0, image_size=16)
    plan, read = source.plan_rows()
    store = ImageStore(tmp_path / "store", source_fingerprint(source, plan))
    read_rows: list[int] = []

    def interrupted(split: str, row: int) -> np.ndarray:
        if split == "train" and row == 2 * CHUNK_ROWS + 10:
            raise KeyboardInterrupt  # as a kill would: two chunks are on disk and recorded, the third is not
        read_rows.append(row)
        return read(split, row)

    with pytest.raises(KeyboardInterrupt):
        store.build(plan, interrupted, progress=False)
    assert not store.complete
    read_rows.clear()
    store.build(plan, lambda split, row: read_rows.append(row) or read(split, row), progress=False)
    assert store.complete
    assert read_rows[0] == 2 * CHUNK_ROWS and len(read_rows) == (3 * CHUNK_ROWS + 100 - 2 * CHUNK_ROWS) + 20
    assert torch.equal(store.open().train.images, source.load().train.images)


def test_a_store_of_other_settings_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    load_through_store(SyntheticSource(train_size=50, val_size=5, image_size=16), tmp_path, 0, progress=False)
    before = folder_bytes(tmp_path)
    other = SyntheticSource(train_size=50, val_size=5, image_size=16, seed=1)
    with pytest.raises(ValueError, match=r"built from other source settings \(seed differ\): remove that folder"):
        load_through_store(other, tmp_path, 0, progress=False)
    assert folder_bytes(tmp_path) == before


def test_a_pass_over_the_stored_pool_does_not_take_the_pool_into_process_memory(tmp_path: Path) -> None:
    """Private (anonymous) memory after a batched pass over a 64 MB pool stays near one batch's size: the pixels
    are read through the page cache, which the system reclaims, not copied into the process."""
    source = SyntheticSource(train_size=16_000, val_size=10, test_size=0, image_size=64)
    load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    script = textwrap.dedent("""
        import torch
        from alvae_pl.data.image_store import load_through_store
        from alvae_pl.data.sources import SyntheticSource

        def private_mb():
            fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
            return int(fields["RssAnon"].split()[0]) / 1024

        before, total = private_mb(), 0.0
        source = SyntheticSource(train_size=16_000, val_size=10, test_size=0, image_size=64)
        data = load_through_store(source, FOLDER, memory_cap_gb=CAP, progress=False)
        for rows in torch.arange(len(data.train)).split(512):
            total += data.train.images[rows].float().mean().item()
        print(private_mb() - before, total)
    """)
    grown_mb = {}
    for mode, folder, cap in (("store", tmp_path / "store", 0), ("memory", tmp_path / "unused", 1)):
        code = script.replace("FOLDER", repr(str(folder))).replace("CAP", str(cap))
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY)
        assert run.returncode == 0, run.stderr[-2000:]
        grown_mb[mode] = float(run.stdout.split()[0])
    # The pool is 64 MB; a batch 2 MB as uint8, 8 MB as float. In memory, the process holds the pool (the control).
    assert grown_mb["store"] < 24 and grown_mb["memory"] > 60, grown_mb


def test_a_run_through_the_store_equals_one_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPOSITORY)
    memory, memory_scores = first_acquisition(tmp_path / "memory", "digits_coreset.yaml")
    store = tmp_path / "store"
    stored, stored_scores = first_acquisition(
        tmp_path / "stored", "digits_coreset.yaml", f"--data.image_store={store}", "--data.memory_cap_gb=0"
    )
    assert json.loads((store / "store.json").read_text())["written"]["train"] == 1257
    assert stored == memory and stored_scores == memory_scores
    history = [read_csv(tmp_path / run / "digits_coreset" / "seed_0" / "history.csv") for run in ("memory", "stored")]
    assert without_timings(history[0]) == without_timings(history[1])


def test_the_file_names_of_a_lab_s_images_survive_the_store(tmp_path: Path) -> None:
    """Predictions and queries name files: a folder's train, validation and test file names come back from the store."""
    digits = DigitsSource().load()
    named = dataclasses.replace(
        digits,
        train_files=tuple(f"scans/ü {i}.png" for i in range(len(digits.train))),
        val_files=tuple(f"val/{i}.png" for i in range(len(digits.val))),
    )

    class NamedFiles(DigitsSource):
        def load(self) -> ImageData:
            return named

    stored = load_through_store(NamedFiles(), tmp_path / "store", memory_cap_gb=0, progress=False)
    assert (stored.train_files, stored.val_files, stored.test_files) == (named.train_files, named.val_files, None)
