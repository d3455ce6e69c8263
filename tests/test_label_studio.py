"""Label Studio as the oracle: the queries go to a real server as tasks, the annotations come back through the same
check as the CSV answers, and the run ends where the simulation ends.

The server runs from its own virtual environment (it pins many packages): ``ALVAE_LABEL_STUDIO`` names its
``label-studio`` executable (``.ci/run`` makes one); without it, or without ``label-studio`` on the PATH, the tests that
need the server are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch

from alvae_pl.callbacks.run_checkpoint import RunCheckpoint
from alvae_pl.cli import main
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.data.digits_folder import FINDINGS, write_digits_folder
from alvae_pl.data.sources import FolderSource
from alvae_pl.oracles import LabelStudioOracle, Query
from alvae_pl.oracles.label_studio_api import LabelStudioClient
from alvae_pl.oracles.label_studio_oracle import RECORD_NAME, pre_annotation
from alvae_pl.run_status import read_run_status
from tests.helpers.cli_runs import read_csv, without_timings
from tests.test_human_oracle import _arguments, _checksums, _same_labels, _simulated

PROJECT = "alvae digits"
#: The server's legacy token (``--user-token``); the oracle gets a personal access token made with it, as a lab would.
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"
#: Minutes a server may take to start: several on 2 loaded cores.
START_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Label Studio server of its own (empty database, one user), headless; yields its URL."""
    executable = os.environ.get("ALVAE_LABEL_STUDIO") or shutil.which("label-studio")
    if executable is None or not Path(executable).is_file():
        pytest.skip("no Label Studio server: set ALVAE_LABEL_STUDIO to the label-studio executable of its venv")
    folder = tmp_path_factory.mktemp("label_studio")
    port = _free_port()
    environment = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(folder),
        # The start command's --user-token is a legacy token, which new organizations refuse unless this is set.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    }
    command = [executable, "start", "--no-browser", "--port", str(port), "--username", "lab@example.com",
               "--password", "alvae-test-password", "--user-token", LEGACY_TOKEN]  # fmt: skip
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                tail = (folder / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"Label Studio exited with {server.returncode} while starting:\n{tail}")
            try:
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not answer {url}/health within {START_TIMEOUT_S} s")
            time.sleep(2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started, all of this fixture's own
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _personal_access_token(url: str) -> str:
    """A personal access token (a JWT refresh token), the kind Label Studio's Account & Settings page gives."""
    headers = {"Authorization": f"Token {LEGACY_TOKEN}"}
    answer = requests.post(f"{url}/api/token/", headers=headers, timeout=60)
    if answer.status_code == 409:  # one per user: revoke the previous one (an earlier test's) first
        for token in requests.get(f"{url}/api/token/", headers=headers, timeout=60).json():
            requests.post(f"{url}/api/token/blacklist/", json={"refresh": token["token"]}, headers=headers, timeout=60)
        answer = requests.post(f"{url}/api/token/", headers=headers, timeout=60)
    answer.raise_for_status()
    return answer.json()["token"]


class Expert:
    """Plays the annotator through Label Studio's API, from the answer key: the class (multi-class), or a tick for
    each finding the key says is present (multi-label)."""

    def __init__(self, url: str, key: Path) -> None:
        self.url = url
        self.client = LabelStudioClient(url, LEGACY_TOKEN, "the test's token")
        rows = read_csv(key)
        self.control = "label" if "label" in rows[0] else "findings"
        self.truth = {
            row["file"]: [row["label"]] if self.control == "label" else [f for f in FINDINGS if row[f] == "1"]
            for row in rows
        }

    def tasks(self, run: Path, round_index: int) -> list[dict]:
        project = json.loads((run / RECORD_NAME).read_text())["project_id"]
        tasks = [t for t in self.client.tasks(project) if t["data"]["round"] == round_index]
        return sorted(tasks, key=lambda t: t["id"])

    def annotate(self, task: dict, choice: str | None = None) -> int:
        choices = [choice] if choice is not None else self.truth[task["data"]["file"]]
        # Nothing ticked is submitted as an empty result, as the labeling page does.
        result = [{"from_name": self.control, "to_name": "image", "type": "choices", "value": {"choices": choices}}]
        result = result if choices else []
        answer = self.client._call("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": result})
        return answer["id"]

    def delete_annotation(self, annotation: int) -> None:
        self.client._call("DELETE", f"/api/annotations/{annotation}/")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the server's start (about 3 minutes on 2 loaded cores) counts, and six commands
def test_label_studio_answers_reproduce_the_simulation_and_failures_change_nothing(
    label_studio: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    simulated = _simulated(lab, tmp_path / "simulated", "--active.heuristic=Margin")
    token = _personal_access_token(label_studio)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    oracle = ["--config=configs/oracles/label_studio.yaml"]  # the shipped overlay (project "alvae digits")
    run = tmp_path / "studio" / "lab_digits" / "run"
    studio = _arguments(lab, tmp_path / "studio", "--active.heuristic=Margin", *oracle,
                        f"--active.oracle.init_args.url={label_studio}")  # fmt: skip
    expert = Expert(label_studio, lab / "answer_key.csv")

    main(studio)  # round 0 trains, the first query becomes 30 tasks, the run stops
    assert (
        "Round 1 waits for labels: 30 of 30 images have no annotation yet in Label Studio project 'alvae digits'"
        in (capsys.readouterr().err)
    )
    assert read_run_status(run) == "waiting_for_labels"
    tasks = expert.tasks(run, 1)
    picks = [t["data"] for t in tasks]
    assert [p["rank"] for p in picks] == list(range(1, 31))  # in picking order
    chosen = {row["file"]: float(row["score"]) for row in read_csv(simulated / "labeled.csv") if row["round"] == "1"}
    assert {p["file"]: p["score"] for p in picks} == pytest.approx(chosen)  # the simulation's picks and scores
    assert all(p["image"].startswith("data:image/png;base64,") for p in picks)
    assert all(t["total_predictions"] == 1 for t in tasks)  # the pre-annotation, which the labeling page starts from
    project = json.loads((run / RECORD_NAME).read_text())["project_id"]
    assert expert.client.project(project)["model_version"] == "alvae-pl round 0"
    # Each pre-annotation is the class the round-0 model (whose probabilities the checkpoint keeps) finds likeliest.
    checkpoint = torch.load(RunCheckpoint.last_path(run), weights_only=True)
    probabilities = checkpoint["callbacks"]["ActiveLearningLoop"]["pending"]["predictions"]  # [30, 10]
    for task, row in zip(tasks, probabilities, strict=True):
        (prediction,) = expert.client._call("GET", "/api/predictions/", params={"task": task["id"]})
        assert prediction["result"][0]["value"]["choices"] == [str(int(row.argmax()))]
        assert prediction["score"] == pytest.approx(float(row.max()))
    # The token is in no file the run wrote: not the config, the checkpoint, the logs or the project note.
    secret = token.encode()
    assert not [p for p in run.rglob("*") if p.is_file() and secret in p.read_bytes()]

    # Failures: one line that says what to do, and not a byte of the run changes.
    for setting, expected in [
        ({"LABEL_STUDIO_API_KEY": "0" * 40}, "refused the token in LABEL_STUDIO_API_KEY (401)"),
        ({"url": f"http://127.0.0.1:{_free_port()}"}, "cannot reach Label Studio at http://127.0.0.1:"),
    ]:
        before = _checksums(run)
        arguments = studio
        if "url" in setting:
            arguments = [*studio, f"--active.oracle.init_args.url={setting['url']}"]
        else:
            monkeypatch.setenv("LABEL_STUDIO_API_KEY", setting["LABEL_STUDIO_API_KEY"])
        with pytest.raises(SystemExit) as stopped:
            main(arguments)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
        assert stopped.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and expected in error
        assert _checksums(run) == before

    # A class the run does not know, and the check of the CSV answers refuses it by task.
    wrong = expert.annotate(tasks[4], choice="seven")
    before = _checksums(run)
    with pytest.raises(SystemExit):
        main(studio)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"Label Studio project 'alvae digits' ({label_studio}/projects/" in error
    assert f"task {tasks[4]['id']}: unknown class 'seven' for {picks[4]['file']}" in error
    assert _checksums(run) == before
    expert.delete_annotation(wrong)

    # Half the answers: the oracle waits, nothing is labeled or rewritten.
    for task in tasks[:15]:
        expert.annotate(task)
    main(studio)
    assert "15 of 30 images have no annotation yet" in capsys.readouterr().err and _checksums(run) == before

    for task in tasks[15:]:
        expert.annotate(task)
    main(studio)  # round 1 trains on the answers, the second query goes out
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["30", "60"]

    # The project deleted under the run: a one-line error; deleting the note asks again in a new project.
    project = json.loads((run / RECORD_NAME).read_text())["project_id"]
    expert.client._call("DELETE", f"/api/projects/{project}/")
    before = _checksums(run)
    with pytest.raises(SystemExit):
        main(studio)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"Label Studio project {project} ('alvae digits') is gone from {label_studio}" in error
    assert _checksums(run) == before
    (run / RECORD_NAME).unlink()
    main(studio)
    assert "Round 2 waits for labels: 30 of 30 images" in capsys.readouterr().err
    for task in expert.tasks(run, 2):
        expert.annotate(task)
    main(studio)

    assert _same_labels(read_csv(run / "labeled.csv"), read_csv(simulated / "labeled.csv"))
    assert without_timings(read_csv(run / "history.csv")) == without_timings(read_csv(simulated / "history.csv"))
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["30", "60", "90"]
    assert read_run_status(run) == read_run_status(simulated) == "finished"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_label_studio_findings_reproduce_the_simulation(
    label_studio: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30, findings=True)
    # Two rounds (30 -> 60 labels): one query, annotated by ticking the findings present.
    findings = [f"--data.source.init_args.classes=[{','.join(FINDINGS)}]", "--active.heuristic=CoreSet",
                "--active.max_labels=60"]  # fmt: skip
    simulated = _simulated(lab, tmp_path / "simulated", *findings)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)  # the legacy kind of token works too
    run = tmp_path / "studio" / "lab_digits" / "run"
    studio = _arguments(lab, tmp_path / "studio", *findings, "--config=configs/oracles/label_studio.yaml",
                        f"--active.oracle.init_args.url={label_studio}",
                        "--active.oracle.init_args.project=alvae findings")  # fmt: skip
    # A project of that title that already holds tasks (another run's): the trained round waits, and the same command
    # naming another project goes on.
    expert = Expert(label_studio, lab / "answer_key.csv")
    taken = expert.client.create_project("alvae findings", "<View><Text name='t' value='$text'/></View>", "")
    expert.client.import_tasks(taken["id"], [{"data": {"text": "someone else's"}}])
    main(studio)
    assert "Label Studio project 'alvae findings' on " in (err := capsys.readouterr().err) and "holds 1 tasks" in err
    assert read_run_status(run) == "waiting_for_labels" and not (run / RECORD_NAME).exists()
    studio.append("--active.oracle.init_args.project=alvae findings 2")
    main(studio)
    assert "Round 1 waits for labels: 30 of 30 images" in capsys.readouterr().err
    assert expert.control == "findings"
    for task in expert.tasks(run, 1):
        expert.annotate(task)
    main(studio)

    assert _same_labels(read_csv(run / "labeled.csv"), read_csv(simulated / "labeled.csv"))
    assert without_timings(read_csv(run / "history.csv")) == without_timings(read_csv(simulated / "history.csv"))
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["30", "60"]


# ------------------------------------------------------------------------------------------ without a server
def _datamodule(lab: Path, findings: bool = False) -> ActiveDataModule:
    classes = list(FINDINGS) if findings else None
    source = FolderSource(
        str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), val_images=str(lab / "val"),
        classes=classes,
    )  # fmt: skip
    return ActiveDataModule(source)


def _task(task_id: int, name: str, *annotations: list[str], control: str = "label", cancelled: bool = False) -> dict:
    """A task as Label Studio's export gives it, with one annotation per list of chosen classes or findings."""
    return {
        "id": task_id,
        "data": {"file": name, "round": 1},
        "annotations": [
            {"was_cancelled": cancelled,
             "result": [{"from_name": control, "to_name": "image", "type": "choices", "value": {"choices": a}}]}
            for a in annotations
        ],
    }  # fmt: skip


def test_annotations_are_checked_like_csv_answers(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    datamodule = _datamodule(lab)
    asked_positions = datamodule.pool.unlabeled[[4, 2, 7]]
    query = Query(round_index=1, positions=asked_positions, scores=torch.tensor([3.0, 2.0, 1.0]))
    asked = [datamodule.pool_files[p] for p in asked_positions.tolist()]
    oracle = LabelStudioOracle(project=PROJECT)
    where = "Label Studio project 'alvae digits'"

    def check(*tasks: dict) -> dict[str, list[int]]:
        return {k: v.tolist() for k, v in oracle.checked_answers(list(tasks), where, asked, query, datamodule).items()}

    # One annotated, one skipped (unanswered), one not annotated yet.
    assert check(_task(7, asked[0], ["3"]), _task(8, asked[1], ["5"], cancelled=True), _task(9, asked[2])) == {
        asked[0]: 3
    }
    with pytest.raises(ValueError, match=f"^{where} task 8: unknown class '3, 5' for {asked[1]}; known: 0, 1, 2"):
        check(_task(7, asked[0], ["3"]), _task(8, asked[1], ["3", "5"]))
    with pytest.raises(ValueError, match=f"^{where} task 8: {asked[0]} is already in task 7; keep one row per image"):
        check(_task(7, asked[0], ["3"]), _task(8, asked[0], ["3"]))
    stranger = next(name for name in datamodule.pool_files if name not in asked)
    with pytest.raises(ValueError, match=f"task 9: {stranger} was not asked for in round 1; delete the task"):
        check(_task(7, asked[0], ["3"]), _task(9, stranger, ["1"]))
    with pytest.raises(ValueError, match=f"task 7: {asked[0]} has 2 annotations; delete all but one"):
        check(_task(7, asked[0], ["3"], ["4"]))


def test_findings_ticked_are_present_and_the_others_absent(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30, findings=True)
    datamodule = _datamodule(lab, findings=True)
    names = tuple(datamodule.data.class_names)
    positions = datamodule.pool.unlabeled[:3]
    query = Query(round_index=1, positions=positions, scores=torch.zeros(3))
    asked = [datamodule.pool_files[p] for p in positions.tolist()]
    oracle = LabelStudioOracle(project=PROJECT)
    # A finding ticked; nothing ticked (no finding present); not annotated yet.
    tasks = [_task(1, asked[0], [names[1]], control="findings"), _task(2, asked[1], [], control="findings"),
             _task(3, asked[2])]  # fmt: skip
    answered = oracle.checked_answers(tasks, "project", asked, query, datamodule)
    expected = [0] * len(names)
    assert answered[asked[1]].tolist() == expected and asked[2] not in answered
    expected[1] = 1
    assert answered[asked[0]].tolist() == expected
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["fracture"]
    with pytest.raises(ValueError, match="finding columns must be exactly .*; unknown fracture"):
        oracle.checked_answers(tasks, "project", asked, query, datamodule)


def test_pre_annotation_proposes_the_models_prediction() -> None:
    probabilities = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
    classes = ("cat", "dog", "owl")
    for row in probabilities:
        prediction = pre_annotation(row, "multiclass", classes, "round 0")
        assert prediction["result"][0]["value"]["choices"] == [classes[int(row.argmax())]]
        assert prediction["score"] == pytest.approx(float(row.max()))
    findings = pre_annotation(torch.tensor([0.9, 0.2, 0.5]), "multilabel", classes, "round 0")
    assert findings["result"][0]["value"]["choices"] == ["cat", "owl"]  # 0.5 and above: present
    assert findings["score"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)


def test_a_missing_token_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    monkeypatch.delenv("LAB_TOKEN", raising=False)
    arguments = _arguments(lab, tmp_path / "logs", "--config=configs/oracles/label_studio.yaml",
                           "--active.oracle.init_args.token_env=LAB_TOKEN")  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: the environment variable LAB_TOKEN holds no Label Studio token: export LAB_TOKEN=")
    assert not (tmp_path / "logs" / "lab_digits" / "run" / "history.csv").exists()
