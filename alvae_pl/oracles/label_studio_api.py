"""The few calls of Label Studio's REST API the oracle needs, each failure one line that says what to do.

Label Studio (https://labelstud.io) documents its API at ``<server>/docs/api``. Only ``requests`` is needed on the
training machine (the ``labelstudio`` extra); the server runs wherever the lab runs it.
"""

from __future__ import annotations

import os
from typing import Any

try:
    import requests
except ImportError:  # the optional extra: refused in one line when the oracle is used without it
    requests = None  # type: ignore[assignment]

#: Seconds to wait for one answer of the server (an import of a few thousand tasks takes a while).
TIMEOUT_S = 300.0
#: Tasks per import request.
IMPORT_BATCH = 500


class LabelStudioError(ValueError):
    """A call to Label Studio failed; the message is one line that says what to do."""


class LabelStudioNotFound(LabelStudioError):
    """The server has no such object (404): a deleted project, say."""


def read_token(token_env: str) -> str:
    """The API token from the environment variable ``token_env`` (never from a file the run writes)."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise LabelStudioError(
            f"the environment variable {token_env} holds no Label Studio token: export {token_env}=<the access token "
            "of Label Studio's Account & Settings page> (active.oracle.init_args.token_env names another variable)"
        )
    return token


class LabelStudioClient:
    """A session with one Label Studio server.

    Args:
        url: the server, e.g. ``http://localhost:8080``.
        token: a legacy API token (40 hex characters, sent as ``Token <token>``) or a personal access token (a JWT
            refresh token, exchanged once for an access token sent as ``Bearer <access>``).
        token_env: the variable the token came from, for messages (the token itself never appears in one).
    """

    def __init__(self, url: str, token: str, token_env: str) -> None:
        if requests is None:
            raise LabelStudioError(
                "the Label Studio oracle needs the requests package: pip install 'alvae-pl[labelstudio]'"
            )
        self.url = url.rstrip("/")
        self.token_env = token_env
        self.session = requests.Session()
        if token.count(".") == 2:  # a JWT: a personal access token
            access = self._call("POST", "/api/token/refresh/", json={"refresh": token}, authorized=False)["access"]
            self.session.headers["Authorization"] = f"Bearer {access}"
        else:
            self.session.headers["Authorization"] = f"Token {token}"

    def _call(self, method: str, path: str, authorized: bool = True, **arguments: Any) -> Any:
        """One request; its JSON answer. Raises :class:`LabelStudioError` with what to do."""
        try:
            response = self.session.request(method, f"{self.url}{path}", timeout=TIMEOUT_S, **arguments)
        except requests.RequestException as error:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} ({type(error).__name__}): start the server, or fix "
                "active.oracle.init_args.url"
            ) from None
        if response.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the token in {self.token_env} ({response.status_code}): copy the "
                f"access token of Label Studio's Account & Settings page into {self.token_env}"
            )
        if response.status_code == 404:
            raise LabelStudioNotFound(f"Label Studio at {self.url} has no {path} (404)")
        if not response.ok:
            detail = " ".join(response.text.split())[:200]
            raise LabelStudioError(
                f"Label Studio at {self.url} answered {response.status_code} to {method} {path}: {detail}"
            )
        return response.json() if response.content else None

    def project(self, project_id: int) -> dict[str, Any] | None:
        """The project with id ``project_id``, or ``None`` when there is none (deleted)."""
        try:
            return self._call("GET", f"/api/projects/{project_id}/")
        except LabelStudioNotFound:
            return None

    def projects_titled(self, title: str) -> list[dict[str, Any]]:
        """The projects whose title is exactly ``title`` (the server filters by substring)."""
        found, page = [], 1
        while True:
            answer = self._call("GET", "/api/projects/", params={"title": title, "page": page, "page_size": 100})
            found += [project for project in answer["results"] if project["title"] == title]
            if not answer.get("next"):
                return found
            page += 1

    def create_project(self, title: str, label_config: str, description: str) -> dict[str, Any]:
        return self._call(
            "POST", "/api/projects/", json={"title": title, "label_config": label_config, "description": description}
        )

    def show_predictions_of(self, project_id: int, model_version: str) -> None:
        """Have the labeling page start each task from the predictions of ``model_version`` (a pre-annotation the
        annotator accepts or corrects), which must be among the project's predictions."""
        self._call("PATCH", f"/api/projects/{project_id}/", json={"model_version": model_version})

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> None:
        """Adds ``tasks`` (``{"data": ..., "predictions": [...]}`` each) to the project, in order, in requests of
        :data:`IMPORT_BATCH` tasks (each task carries its image: a query of large images is many megabytes)."""
        for start in range(0, len(tasks), IMPORT_BATCH):
            batch = tasks[start : start + IMPORT_BATCH]
            self._call("POST", f"/api/projects/{project_id}/import", json=batch, params={"commit_to_project": "true"})

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its ``data`` and ``annotations`` (Label Studio's JSON export)."""
        return self._call(
            "GET", f"/api/projects/{project_id}/export", params={"exportType": "JSON", "download_all_tasks": "true"}
        )
