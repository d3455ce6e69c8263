"""The offline digits written as a lab would hold its images: PNG files, a few labels in a CSV, the rest unknown.

``python -m alvae_pl.data.digits_folder lab_demo`` writes::

    lab_demo/images/digit_0000.png ...   the pool (the digits' train split), 28 x 28 grayscale
    lab_demo/labels.csv                  file,label for the images "labeled so far" (30, drawn at random)
    lab_demo/val/ + lab_demo/val.csv     labeled validation images
    lab_demo/test/ + lab_demo/test.csv   labeled test images
    lab_demo/answer_key.csv              every pool image's label: the expert's knowledge, for playing the expert

``--findings`` writes a multi-label version instead (three 0/1 findings per digit: even, above_four, has_loop),
the layout of ChestMNIST-like data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from alvae_pl.atomic_files import write_csv
from alvae_pl.data.label_pool import LabelPool
from alvae_pl.data.sources.digits_source import DigitsSource

#: Multi-label findings of a digit, for the ``--findings`` layout.
FINDINGS = {
    "even": lambda digit: digit % 2 == 0,
    "above_four": lambda digit: digit > 4,
    "has_loop": lambda digit: digit in (0, 4, 6, 8, 9),
}


def write_digits_folder(folder: str | Path, initial_labels: int = 30, seed: int = 0, findings: bool = False) -> Path:
    """Writes the digits as PNG files and label CSVs under ``folder`` (see the module docstring).

    Args:
        folder: where to write; it must not hold a ``labels.csv`` yet (nothing already there is overwritten).
        initial_labels: pool images listed in ``labels.csv``; drawn as ``LabelPool`` draws them with
            ``pool_seed=seed``, so a simulated run with ``data.initial_labels`` = this and ``data.pool_seed`` =
            ``seed`` starts from the same labels.
        seed: seeds the choice of the labeled images.
        findings: write multi-label findings instead of class names.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    if (folder / "labels.csv").exists():
        raise FileExistsError(f"{folder / 'labels.csv'} exists: write the demo folder somewhere else")
    data = DigitsSource().load()
    header = ["file", *FINDINGS] if findings else ["file", "label"]

    def label_cells(digit: int) -> list[object]:
        return [int(rule(digit)) for rule in FINDINGS.values()] if findings else [str(digit)]

    for split, subfolder in ((data.train, "images"), (data.val, "val"), (data.test, "test")):
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
        names = []
        for index, image in enumerate(split.images):
            name = f"digit_{index:04d}.png"
            Image.fromarray(image[0].numpy()).save(folder / subfolder / name)
            names.append(name)
        rows = [[name, *label_cells(int(t))] for name, t in zip(names, split.targets.tolist(), strict=True)]
        if subfolder == "images":
            write_csv(folder / "answer_key.csv", header, rows)
            chosen = LabelPool(len(rows), None, initial_labels, seed).labeled.tolist()
            write_csv(folder / "labels.csv", header, [rows[i] for i in chosen])
        else:
            write_csv(folder / f"{subfolder}.csv", header, rows)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="where to write the images and CSVs")
    parser.add_argument("--initial-labels", type=int, default=30, help="images listed in labels.csv (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seeds which images are labeled (default 0)")
    parser.add_argument("--findings", action="store_true", help="multi-label findings instead of digit classes")
    arguments = parser.parse_args()
    folder = write_digits_folder(arguments.folder, arguments.initial_labels, arguments.seed, arguments.findings)
    print(f"Wrote the digits to {folder}: images/, labels.csv, val/, val.csv, test/, test.csv, answer_key.csv")


if __name__ == "__main__":
    main()
