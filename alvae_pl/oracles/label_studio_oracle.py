"""A lab's Label Studio server as the oracle: each round's picks become tasks there, the annotations come back."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from PIL import Image
from torch import Tensor

from alvae_pl.atomic_files import atomic_write_text
from alvae_pl.data.label_table import FILE_COLUMN, LABEL_COLUMN, LabelRows
from alvae_pl.oracles.answer_check import answered_part, check_answers
from alvae_pl.oracles.human_oracle import continue_command
from alvae_pl.oracles.label_studio_api import LabelStudioClient, LabelStudioError, read_token
from alvae_pl.oracles.oracle import Answers, Oracle, Query

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule

#: The run folder's note of which Label Studio project holds its queries (no token: the token is never written).
RECORD_NAME = "label_studio.json"
#: The labeling configuration's names: the image, and the choices of a multi-class or a multi-label task.
IMAGE_NAME = "image"
CHOICES_NAME = {"multiclass": "label", "multilabel": "findings"}


def label_config(task: str, class_names: tuple[str, ...]) -> str:
    """Label Studio's labeling configuration (XML) for ``class_names``: one class per image (multi-class), or any
    number of findings (multi-label; none ticked means none present). The header shows the task's ``caption``."""
    single = task == "multiclass"
    kind, required = ("single-radio", ' required="true"') if single else ("multiple", "")
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        '  <Header value="$caption"/>\n'
        f'  <Image name="{IMAGE_NAME}" value="$image" smoothing="false"/>\n'
        f'  <Choices name="{CHOICES_NAME[task]}" toName="{IMAGE_NAME}" choice="{kind}" showInline="true"{required}>\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>"
    )


def png_data_uri(image: Tensor) -> str:
    """uint8 ``[C, H, W]`` (``C`` 1 or 3) as a ``data:image/png;base64,...`` URI, which Label Studio shows as is."""
    array = image.permute(1, 2, 0).squeeze(-1).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pre_annotation(
    probabilities: Tensor, task: str, class_names: tuple[str, ...], model_version: str
) -> dict[str, Any]:
    """The model's prediction for one image as a Label Studio prediction.

    Args:
        probabilities: float ``[K]``: softmax over classes (multi-class: the top class is proposed, its probability
            is the score) or sigmoid per finding (multi-label: findings at 0.5 or more are proposed; the score is
            the mean over findings of the probability of the proposed value).
    """
    if task == "multiclass":
        top = int(probabilities.argmax())
        chosen, score = [class_names[top]], float(probabilities[top])
    else:
        present = probabilities >= 0.5
        chosen = [name for name, on in zip(class_names, present.tolist(), strict=True) if on]
        score = float(probabilities.where(present, 1 - probabilities).mean())
    result = {
        "from_name": CHOICES_NAME[task],
        "to_name": IMAGE_NAME,
        "type": "choices",
        "value": {"choices": chosen},
    }
    return {"model_version": model_version, "score": score, "result": [result]}


def model_version(query: Query) -> str:
    """Label Studio's name for the model whose predictions pre-annotate ``query``: the one round ``r - 1`` trained."""
    return f"alvae-pl round {query.round_index - 1}"


class LabelStudioOracle(Oracle):
    """Asks through a Label Studio project: each query becomes tasks there; the run waits for the annotations.

    At the end of round ``r - 1`` the picks go to the project as tasks, in picking order: the image (a PNG as the
    model sees it, inline), its file name, rank and the heuristic's score (shown above the image and as columns of
    the project's data manager), and the model's prediction as a pre-annotation the annotator accepts or corrects.
    The run then checkpoints and stops (exit status 3), like :class:`~alvae_pl.oracles.HumanOracle`. Running the
    same command again (``--ckpt_path last``) reads the project's annotations of round ``r``'s tasks, checks them
    exactly as the CSV answers are checked (every asked image at most once, known classes, 0/1 findings, no image
    that was not asked), labels them and trains round ``r``. A skipped task counts as unanswered.

    The project is found by its title or created with a labeling configuration for the data's classes (one choice
    per image, or any number of findings for multi-label data); ``<run folder>/label_studio.json`` notes its id, so
    a later renamed project stays the run's. The API token is read from the environment variable ``token_env`` on
    every use and never written: not to the config, the checkpoint, a log or that note. A failure (server down,
    token refused, project deleted, a mistaken annotation) is one line that says what to do, and nothing already
    written changes.

    Args:
        url: the Label Studio server.
        project: the title of the project that holds the run's queries (created when there is none).
        token_env: the environment variable holding the API token (Label Studio's Account & Settings page: a legacy
            token or a personal access token).
        partial: what to do when some asked images have no annotation yet: ``wait`` (stop again, labeling
            nothing) or ``use`` (label the annotated ones; the others go back to the unlabeled pool).
    """

    shows_predictions = True
    takes_corrections = True

    def __init__(
        self,
        url: str = "http://localhost:8080",
        project: str = "alvae-pl",
        token_env: str = "LABEL_STUDIO_API_KEY",
        partial: Literal["wait", "use"] = "wait",
    ) -> None:
        if partial not in ("wait", "use"):
            raise ValueError(f"active.oracle.partial must be wait or use, got {partial!r}")
        if not project.strip():
            raise ValueError("active.oracle.project is empty: name the Label Studio project that gets the queries")
        self.url = url.rstrip("/")
        self.project = project
        self.token_env = token_env
        self.partial = partial

    def check(self, datamodule: ActiveDataModule) -> None:
        read_token(self.token_env)  # before any training: the run will need it at the end of its first round

    def answer(self, query: Query, datamodule: ActiveDataModule, run_folder: Path) -> Answers | str:
        client = LabelStudioClient(self.url, read_token(self.token_env), self.token_env)
        data = datamodule.data
        files = datamodule.pool_files
        asked = [files[p] if files is not None else f"pool_{p}" for p in query.positions.tolist()]
        project = self._project(client, run_folder, data.task, tuple(data.class_names))
        where = f"Label Studio project {project['title']!r} ({self.url}/projects/{project['id']})"
        tasks = [t for t in client.tasks(project["id"]) if t["data"].get("round") == query.round_index]
        have = {t["data"].get(FILE_COLUMN) for t in tasks}
        unsent = [i for i, name in enumerate(asked) if name not in have]
        if unsent:  # a new query (or the rest of one whose import was cut short)
            client.import_tasks(project["id"], self._tasks(query, asked, unsent, datamodule))
            if query.predictions is not None:
                client.show_predictions_of(project["id"], model_version(query))
            return self._waiting(query, where, len(asked), len(asked))
        answered = self.checked_answers(tasks, where, asked, query, datamodule)
        missing = len(asked) - len(answered)
        if not answered or (missing and self.partial == "wait"):
            return self._waiting(query, where, missing, len(asked))
        return answered_part(query, asked, answered)

    # ------------------------------------------------------------------------------------------ helpers
    def checked_answers(
        self, tasks: list[dict], where: str, asked: list[str], query: Query, datamodule: ActiveDataModule
    ) -> dict[str, Tensor]:
        """The annotations of the query's ``tasks`` (Label Studio's export), checked as the CSV answers are
        (:func:`~alvae_pl.oracles.answer_check.check_answers`); ``where`` names the project in messages."""
        data = datamodule.data
        return check_answers(
            self._annotations(tasks, where, data.task, tuple(data.class_names)),
            asked,
            query,
            datamodule,
            remove_hint="delete the task",
            unknown_hint="choose one of the run's classes: they are fixed when it starts",
        )

    def _project(self, client: LabelStudioClient, run_folder: Path, task: str, names: tuple[str, ...]) -> dict:
        """The run's project: the one its note names, else the one titled ``project`` (created when there is none).
        The note is written before any task is sent, so that a continued run asks the same project."""
        record = run_folder / RECORD_NAME
        if record.is_file():
            noted = json.loads(record.read_text())
            project = client.project(noted["project_id"])
            if project is None:
                raise LabelStudioError(
                    f"Label Studio project {noted['project_id']} ({noted['title']!r}) is gone from {self.url}: restore "
                    f"it (its tasks hold the answers), or delete {record} to ask again in a new project"
                )
            return project
        found = client.projects_titled(self.project)
        if len(found) > 1:
            raise LabelStudioError(
                f"{len(found)} projects are titled {self.project!r} on {self.url}: rename all but one, or name "
                "another in active.oracle.init_args.project"
            )
        if found:
            project = found[0]
            if project.get("task_number"):
                raise LabelStudioError(
                    f"Label Studio project {self.project!r} on {self.url} already holds {project['task_number']} "
                    "tasks (another run's?): name a new project in active.oracle.init_args.project"
                )
            self._check_config(project, task)
        else:
            project = client.create_project(
                self.project, label_config(task, names), "Images an active-learning run (alvae-pl) asks about"
            )
        atomic_write_text(record, json.dumps({"project_id": project["id"], "title": project["title"]}) + "\n")
        return project

    def _check_config(self, project: dict, task: str) -> None:
        """An existing (empty) project must name its choices as the oracle reads them."""
        controls = {element.get("name") for element in ElementTree.fromstring(project["label_config"]).iter("Choices")}
        if CHOICES_NAME[task] not in controls:
            raise LabelStudioError(
                f"Label Studio project {self.project!r} on {self.url} has no Choices named {CHOICES_NAME[task]!r} "
                "in its labeling configuration: delete it and let the run create it, or name a new project"
            )

    def _tasks(self, query: Query, asked: list[str], which: list[int], datamodule: ActiveDataModule) -> list[dict]:
        """Label Studio tasks for the picks ``which`` (indices into the query), in picking order."""
        data = datamodule.data
        images = datamodule.pool_images(query.positions[which]).cpu()
        tasks = []
        for image, i in zip(images, which, strict=True):
            rank, score = i + 1, float(query.scores[i])
            task: dict[str, Any] = {
                "data": {
                    "image": png_data_uri(image),
                    "caption": f"Round {query.round_index}, #{rank}: {asked[i]} (score {score:.4g})",
                    FILE_COLUMN: asked[i],
                    "rank": rank,
                    "pool_index": int(query.positions[i]),
                    "score": score,
                    "round": query.round_index,
                }
            }
            if query.predictions is not None:
                task["predictions"] = [
                    pre_annotation(query.predictions[i], data.task, tuple(data.class_names), model_version(query))
                ]
            tasks.append(task)
        return tasks

    def _annotations(self, tasks: list[dict], where: str, task: str, names: tuple[str, ...]) -> LabelRows:
        """The submitted (not skipped) annotations of ``tasks`` as rows of the labels-CSV layout, numbered by task id,
        for :func:`~alvae_pl.oracles.answer_check.check_answers`: multi-class, the chosen class in ``label``
        (several joined, which the check refuses); multi-label, 1 for each ticked finding and 0 for the others. A
        task without an annotation has empty label cells (unanswered)."""
        control = CHOICES_NAME[task]
        rows, columns = [], [FILE_COLUMN, *([LABEL_COLUMN] if task == "multiclass" else names)]
        for item in sorted(tasks, key=lambda t: t["id"]):
            annotations = [a for a in item.get("annotations") or [] if not a.get("was_cancelled")]
            if len(annotations) > 1:
                raise LabelStudioError(
                    f"{where} task {item['id']}: {item['data'].get(FILE_COLUMN)} has {len(annotations)} annotations; "
                    "delete all but one (each image is labeled once)"
                )
            cells = {FILE_COLUMN: str(item["data"].get(FILE_COLUMN, ""))}
            for annotation in annotations:
                chosen = [
                    choice
                    for result in annotation.get("result") or []
                    if result.get("from_name") == control and result.get("type") == "choices"
                    for choice in result["value"].get("choices", [])
                ]
                if task == "multiclass":
                    cells[LABEL_COLUMN] = ", ".join(chosen)
                else:  # an unknown finding becomes a column of its own, which the check names and refuses
                    columns += [name for name in chosen if name not in columns]
                    cells.update({name: "1" if name in chosen else "0" for name in names + tuple(chosen)})
            rows.append((int(item["id"]), cells))
        padded = tuple((number, {c: cells.get(c, "") for c in columns}) for number, cells in rows)
        return LabelRows(path=where, columns=tuple(columns), rows=padded, row_word="task")

    def _waiting(self, query: Query, where: str, missing: int, asked: int) -> str:
        """The one line a paused run ends with: where to annotate, what to run."""
        return (
            f"Round {query.round_index} waits for labels: {missing} of {asked} images have no annotation yet in "
            f"{where}. Annotate them there, then continue with: {continue_command()}"
        )
