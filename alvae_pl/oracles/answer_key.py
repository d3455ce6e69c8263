"""Playing the expert from known labels: answers a query file from an answer key (for demos and tests).

``python -m alvae_pl.oracles.answer_key KEY.csv QUERY.csv ANSWERS.csv`` writes, for every image the query asks
about, its row of the key (``file`` + label columns); continue the run with ``--labels ANSWERS.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alvae_pl.atomic_files import write_csv
from alvae_pl.data.label_table import FILE_COLUMN, read_label_rows


def answer_from_key(key: str | Path, query: str | Path, answers: str | Path, limit: int | None = None) -> Path:
    """Writes ``answers``: the key's rows for the query's images, in the query's order.

    Args:
        key: CSV with every image's labels (``file`` + label columns).
        query: a ``query_round_<r>.csv`` the run wrote.
        answers: the CSV to write; it must not exist yet.
        limit: answer only the first ``limit`` asked images (to try partial answers).

    Raises:
        FileExistsError: ``answers`` exists.
        ValueError: the key has no row for an asked image.
    """
    answers = Path(answers)
    if answers.exists():
        raise FileExistsError(f"{answers} exists: name another file for the answers")
    key_rows = read_label_rows(key)
    by_file = {cells[FILE_COLUMN]: cells for _, cells in key_rows.rows}
    asked = [cells[FILE_COLUMN] for _, cells in read_label_rows(query).rows][:limit]
    missing = [name for name in asked if name not in by_file]
    if missing:
        raise ValueError(f"{key_rows.path} has no row for {missing[0]} (and {len(missing) - 1} more asked images)")
    return write_csv(answers, key_rows.columns, [[by_file[name][c] for c in key_rows.columns] for name in asked])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("key", help="CSV with every image's labels")
    parser.add_argument("query", help="the run's query_round_<r>.csv")
    parser.add_argument("answers", help="the answers CSV to write")
    arguments = parser.parse_args()
    path = answer_from_key(arguments.key, arguments.query, arguments.answers)
    print(f"Wrote {path}: continue the run with --labels {path}")


if __name__ == "__main__":
    main()
