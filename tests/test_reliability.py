"""Nothing lost, nothing mixed: atomic checkpoints, one process per run folder, resumes that refuse a changed run,
one line for every bad input, and a refused run that leaves every file as it was."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alvae_pl.atomic_checkpoint_io import AtomicCheckpointIO
from alvae_pl.atomic_files import DiskFullError, atomic_write, atomic_write_bytes
from alvae_pl.cli import main
from alvae_pl.experiments.jobs import task_run_state
from alvae_pl.run_identity import flat_settings, resume_differences
from alvae_pl.run_lock import LOCK_FILENAME, LockOwner, RunLock, live_owner

REPOSITORY = Path(__file__).resolve().parents[1]
TINY = str(REPOSITORY / "tests" / "conf" / "task_tiny.yaml")


def train(folder: Path, *extra: str, config: str = TINY) -> tuple[int, str]:
    """``train.py fit --config <config> <extra>`` in this process, logging under ``folder``: (exit code, stderr)."""
    stderr = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(stderr):
        try:
            main(["fit", "--config", config, f"--trainer.logger.init_args.save_dir={folder}", *extra])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, stderr.getvalue()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> the SHA-256 of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(code: int, stderr: str, *expected: str) -> str:
    """The run exited with status 2 and printed one ``error:`` line (no traceback) holding each ``expected``."""
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logging folder of one finished ``task_tiny`` run (two rounds); copy it before changing anything."""
    folder = tmp_path_factory.mktemp("finished")
    code, stderr = train(folder)
    assert code == 0, stderr[-3000:]
    return folder


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of ``finished_run``'s logging folder; the run itself is ``<copy>/task_tiny/seed_0``."""
    copy = tmp_path / "logs"
    shutil.copytree(finished_run, copy)
    return copy


def read_history(folder: Path) -> list[dict[str, str]]:
    with open(folder / "history.csv", newline="") as history:
        return list(csv.DictReader(history))


def run_folder(logs: Path) -> Path:
    return logs / "task_tiny" / "seed_0"


# ----------------------------------------------------------------------------------------- atomic files


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "last.ckpt", b"previous round")

    def half_then_fail(handle: io.BufferedWriter) -> None:
        handle.write(b"x" * 100_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"last\.ckpt \(its previous version, if any, is intact\)"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"previous round"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoints_never_use_the_system_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's writer put its temporary file in $TMPDIR and moved it: a copy across filesystems."""
    import tempfile

    unusable = tmp_path / "no_such_tmp"  # any use of the temporary directory would fail
    monkeypatch.setenv("TMPDIR", str(unusable))
    monkeypatch.setattr(tempfile, "tempdir", str(unusable))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.arange(5)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from alvae_pl.atomic_files import atomic_write

    def slow(handle):
        for _ in range(200):
            handle.write(b"n" * 1_000_000)
            handle.flush()
            print("writing", flush=True)
            time.sleep(0.05)

    atomic_write(sys.argv[1], slow)
    """
)


def test_a_kill_during_a_checkpoint_write_across_filesystems_keeps_last_ckpt(tmp_path: Path) -> None:
    """The run folder on one filesystem, $TMPDIR on another (a tmpfs), SIGKILL in the middle of the write."""
    other_filesystem = Path("/dev/shm")
    if not other_filesystem.is_dir() or other_filesystem.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm) for $TMPDIR")
    temporary = Path(os.environ.get("ALVAE_TEST_SHM", other_filesystem)) / f"alvae_tmp_{os.getpid()}"
    temporary.mkdir()
    try:
        target = tmp_path / "checkpoints" / "last.ckpt"
        AtomicCheckpointIO().save_checkpoint({"round": 1}, target)
        before = target.read_bytes()
        environment = dict(os.environ, TMPDIR=str(temporary), PYTHONPATH=str(REPOSITORY))
        writer = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=environment, text=True
        )
        assert writer.stdout is not None
        for _ in range(3):  # a few megabytes in
            assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        assert target.read_bytes() == before
        assert list(temporary.iterdir()) == []  # nothing stray in the temporary directory
        strays = [p.name for p in target.parent.iterdir() if p.name != "last.ckpt"]
        assert len(strays) == 1 and strays[0].startswith(".last.ckpt.")  # hidden, beside the target
        AtomicCheckpointIO().save_checkpoint({"round": 2}, target)  # the next write clears it away
        assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
        assert torch.load(target, weights_only=True) == {"round": 2}
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A 512 KiB tmpfs mounted for the test (needs the right to mount, as root in CI's container)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], capture_output=True
    ).returncode
    if mounted != 0:
        pytest.skip("cannot mount a small tmpfs here (the simulated full disk above still runs)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_keeps_the_previous_checkpoint(small_filesystem: Path) -> None:
    target = small_filesystem / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(40_000)}, target)  # ~160 KB
    before = target.read_bytes()
    with pytest.raises(DiskFullError, match="no space left on the device of"):
        AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(100_000)}, target)  # ~400 KB: does not fit
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


# ---------------------------------------------------------------------------------------------- the lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from alvae_pl.run_lock import RunLock

    lock = RunLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_second_process_on_a_run_folder_is_refused_and_changes_nothing(run_copy: Path) -> None:
    folder = run_folder(run_copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY)),
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert live_owner(folder) is not None and live_owner(folder).pid == holder.pid
        assert task_run_state(folder) == "running"  # what `experiment.py list` shows
        before = snapshot(run_copy)
        code, stderr = train(run_copy, "--ckpt_path", "last")
        assert_one_line_error(code, stderr, f"is in use by process {holder.pid}", "wait for it to end")
        assert snapshot(run_copy) == before
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone: the lock is stale, and the next run takes it over.
    assert live_owner(folder) is None
    assert task_run_state(folder) == "finished"
    code, stderr = train(run_copy, "--ckpt_path", "last")
    assert code == 0, stderr[-3000:]
    assert not (folder / LOCK_FILENAME).exists()  # released on exit


def test_a_lock_of_a_reused_pid_is_stale(tmp_path: Path) -> None:
    """A pid that lives again in another process (other start time) does not hold the lock."""
    me = LockOwner.this_process()
    if not me.started:
        pytest.skip("process start times need /proc")
    (tmp_path / LOCK_FILENAME).write_text(json.dumps({**me.__dict__, "started": me.started - 1}))
    assert live_owner(tmp_path) is None
    lock = RunLock(tmp_path)
    lock.acquire()
    assert live_owner(tmp_path) == me
    lock.release()
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_an_unwritable_run_folder_is_one_line(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only folder (root ignores permission bits, so the filesystem's answer is simulated)."""
    real_open = os.open

    def read_only(path, flags, *args):  # noqa: ANN001 - os.open's signature
        if str(path).endswith(LOCK_FILENAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    before = snapshot(run_copy)
    code, stderr = train(run_copy, "--ckpt_path", "last")
    assert_one_line_error(code, stderr, "cannot write in the run folder", "the filesystem is read-only")
    assert snapshot(run_copy) == before


# --------------------------------------------------------------------------------------------- resumes


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--active.heuristic", "RandomSampling"], "active.heuristic.class_path (CoreSet -> RandomSampling)"),
        (["--seed_everything", "1"], "seed_everything (0 -> 1)"),
        (["--active.budget", "30"], "active.budget (60 -> 30)"),
        (["--active.max_labels", "180"], "active.max_labels (120 -> 180)"),
        (["--data.initial_labels", "50"], "data.initial_labels (60 -> 50)"),
        (["--model.init_args.lr", "0.1"], "model.init_args.lr (0.02 -> 0.1)"),
    ],
)
def test_a_resume_with_other_run_settings_is_refused_before_anything_trains(
    run_copy: Path, change: list[str], named: str
) -> None:
    before = snapshot(run_copy)
    code, stderr = train(run_copy, "--ckpt_path", "last", *change)
    assert_one_line_error(code, stderr, "belongs to a run with other settings", named)
    assert snapshot(run_copy) == before


def test_a_finished_run_continued_says_so_and_writes_nothing(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, "--active.max_labels=60")  # one round, in its own folder (save_dir unchanged)
    assert code == 0, stderr[-3000:]
    folder = run_folder(tmp_path)
    history = read_history(folder)
    assert stderr.strip().splitlines()[-1] == (
        f"Finished: 1 round, 60 labels, val_accuracy {float(history[-1]['val_accuracy']):.4f}, val_auroc "
        f"{float(history[-1]['val_auroc']):.4f}; records in {folder} (history.csv, labeled.csv)"
    )
    before = snapshot(tmp_path)
    code, stderr = train(tmp_path, "--active.max_labels=60", "--ckpt_path", "last")
    assert code == 0, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"Nothing to do: this run finished earlier (1 round, 60 labels); records in {folder} (history.csv, labeled.csv)"
    )
    assert snapshot(tmp_path) == before  # no config_2.yaml, no events file, nothing rewritten


def test_what_may_change_on_resume_is_accepted_and_recorded(tmp_path: Path) -> None:
    kill = tmp_path / "kill.yaml"  # killed while round one's checkpoint is written: round 0 is in the last one
    kill.write_text("trainer:\n  callbacks:\n    - class_path: tests.helpers.kill_switch.KillSwitch\n      init_args: "
                    "{at_checkpoint_of_epoch: 1}\n")  # fmt: skip
    command = [sys.executable, str(REPOSITORY / "train.py"), "fit", "--config", TINY, "--config", str(kill),
               f"--trainer.logger.init_args.save_dir={tmp_path}", "--checkpoint.min_interval=0"]  # fmt: skip
    killed = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    assert killed.returncode == -9, killed.stderr[-3000:]
    folder = run_folder(tmp_path)
    code, stderr = train(tmp_path, "--ckpt_path", "last", "--trainer.enable_progress_bar=true",
                         "--checkpoint.min_interval=5")  # fmt: skip
    assert code == 0, stderr[-3000:]
    assert "min_interval: 5.0" in (folder / "config_2.yaml").read_text()
    assert [row["labels"] for row in read_history(folder)] == ["60", "120"]


def test_what_defines_a_run_against_what_may_change() -> None:
    """The comparison itself, on hand-made settings."""
    run = flat_settings("seed_everything: 0\nactive: {budget: 60, max_labels: 120}\ntrainer: {devices: 1}\n")
    assert resume_differences(run, flat_settings("seed_everything: 0\nactive: {budget: 60, max_labels: 90}\n"
                                                 "trainer: {devices: 2}\n")) == []  # fmt: skip
    assert resume_differences(run, flat_settings("seed_everything: 0\nactive: {budget: 60, max_labels: null}\n")) == [
        "active.max_labels (120 -> None)"
    ]
    unbounded = flat_settings("active: {max_labels: null}\n")
    assert resume_differences(unbounded, flat_settings("active: {max_labels: 500}\n")) == []


def test_a_corrupt_checkpoint_is_one_line_and_the_runner_calls_the_run_failed(run_copy: Path) -> None:
    folder = run_folder(run_copy)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    (folder / "run_status.json").write_text('{"status": "training"}\n')  # as if killed mid-run
    before = snapshot(run_copy)
    code, stderr = train(run_copy, "--ckpt_path", "last")
    line = assert_one_line_error(code, stderr, f"{checkpoint} is not a readable checkpoint")
    assert f"({checkpoint.stat().st_size:,} bytes; " in line and "start it again in another folder" in line
    assert snapshot(run_copy) == before
    assert task_run_state(folder) == "failed"


# ------------------------------------------------------------------------------------------- bad input


def test_a_config_file_that_does_not_exist(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, config=str(tmp_path / "nope.yaml"))
    assert_one_line_error(code, stderr, "--config", "File does not exist", "nope.yaml")
    assert list(tmp_path.iterdir()) == []


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("active:\n  budget: 60\ntrainer: [a, b\n")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", TINY, "--config", str(broken)])
    assert exit_.value.code == 2
    assert_one_line_error(2, stderr.getvalue(), f"{broken}, line 4, column 1", "not valid YAML")


def test_a_negative_learning_rate_names_the_option(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, "--model.init_args.lr=-0.1")
    assert_one_line_error(code, stderr, "model.init_args.lr", "-0.1")
    assert list(tmp_path.iterdir()) == []  # the refused run left no folder, no events file


def test_a_refused_new_run_writes_nothing(tmp_path: Path) -> None:
    """Refused in the loop's setup (after the Trainer and logger exist): still no config.yaml, no events file."""
    code, stderr = train(tmp_path, "--active.max_labels=5000")
    assert_one_line_error(code, stderr, "active.max_labels=5000 exceeds the pool")
    assert list(tmp_path.iterdir()) == []


def write_npz(path: Path, train_images: np.ndarray, train_labels: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    other = {
        f"{split}_{kind}": value
        for split in ("val", "test")
        for kind, value in (("images", rng.integers(0, 255, (4, 28, 28), dtype=np.uint8)), ("labels", np.arange(4)))
    }
    np.savez(path, train_images=train_images, train_labels=train_labels, **other)
    return path


def npz_run(tmp_path: Path, npz: Path) -> tuple[int, str]:
    overlay = tmp_path / "npz.yaml"
    overlay.write_text(
        f"data:\n  source:\n    class_path: alvae_pl.data.sources.NpzSource\n    init_args: {{path: {npz}}}\n"
        "  initial_labels: 4\nactive: {budget: 2, max_labels: 8}\n"
    )
    return train(tmp_path / "logs", "--config", str(overlay))


def test_a_label_without_its_classes_between_is_one_line(tmp_path: Path) -> None:
    """Labels 0..9 and one 12, no class names: not a 13-class model with two empty classes."""
    labels = np.arange(20) % 10
    labels[5] = 12
    npz = write_npz(tmp_path / "gap.npz", np.zeros((20, 28, 28), np.uint8), labels)
    code, stderr = npz_run(tmp_path, npz)
    assert_one_line_error(code, stderr, "labels go up to 12 but no image has class 10, 11", "class_names")
    assert not (tmp_path / "logs").exists()


def test_a_single_rgb_image_is_named_as_such(tmp_path: Path) -> None:
    npz = write_npz(tmp_path / "one.npz", np.zeros((28, 28, 3), np.uint8), np.zeros(1, np.int64))
    code, stderr = npz_run(tmp_path, npz)
    assert_one_line_error(code, stderr, "one 28 x 28 image with channels last", "array[None]")


# ---------------------------------------------------------------------------------------------- runner

ORPHAN_CHECK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from alvae_pl.experiments.execution import run_process

    child = [sys.executable, "-c", "import os, time; print('child', os.getpid(), flush=True); time.sleep(120)"]
    run_process(child, Path(sys.argv[1]))
    """
)


def test_a_killed_runner_leaves_no_orphan_and_keeps_its_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    runner = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_CHECK, str(log)], env=dict(os.environ, PYTHONPATH=str(REPOSITORY))
    )
    deadline = time.monotonic() + 60
    started = re.compile(r"^child (\d+)$", re.MULTILINE)
    while not started.search(log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    match = started.search(log.read_text())
    assert match, "the child's line did not reach train.log while it ran"
    child_pid = int(match.group(1))
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and is_running(child_pid):
        time.sleep(0.1)
    if is_running(child_pid):
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the runner's child outlived it")


def is_running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_sigterm_stops_a_run_in_one_line(tmp_path: Path) -> None:
    """What a scheduler's preemption sends: exit status 143 (not Lightning's 0), one line, the lock released, the
    checkpoint readable."""
    folder = run_folder(tmp_path)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    command = [sys.executable, str(REPOSITORY / "train.py"), "fit", "--config", TINY,
               f"--trainer.logger.init_args.save_dir={tmp_path}", "--active.epochs_first=5000",
               "--active.max_labels=60", "--checkpoint.min_interval=0", "--trainer.max_epochs=-1"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:  # training has started
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: stopped by SIGTERM; continue the run with the same command and --ckpt_path last (its last checkpoint "
        "is intact)"
    ]
    assert "Traceback" not in stderr
    assert not (folder / LOCK_FILENAME).exists()
    assert torch.load(checkpoint, weights_only=True)["epoch"] >= 0


RUNNER_UNDER_SIGTERM = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from alvae_pl.experiments.execution import Interrupted, run_process

    child = [sys.executable, "-c", "import os, time; print('child', os.getpid(), flush=True); time.sleep(120)"]
    try:
        run_process(child, Path(sys.argv[1]))
    except Interrupted as error:
        print(error, flush=True)
        sys.exit(1)
    """
)


def test_a_runner_passes_sigterm_on_and_waits_for_its_run(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER_UNDER_SIGTERM, str(log)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY)),
    )
    started = re.compile(r"^child (\d+)$", re.MULTILINE)
    deadline = time.monotonic() + 60
    while not started.search(log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int(started.search(log.read_text()).group(1))
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 1
    assert output.startswith("stopped by SIGTERM; the run in") and "run the same command again to resume" in output
    assert not is_running(child_pid)  # the runner returned only once its run had ended
