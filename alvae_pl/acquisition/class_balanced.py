"""Class-balanced selection (Emam et al., *Active learning at the ImageNet scale*, 2021): any heuristic, its budget
split evenly over the classes the task model predicts, so that a batch is never lopsided towards the common ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic, Selection
from alvae_pl.acquisition.heuristic_wrapper import HeuristicWrapper
from alvae_pl.models.metrics import scores

if TYPE_CHECKING:
    from alvae_pl.data.label_pool import LabelPool
    from alvae_pl.models.task_model import TaskModel

#: The output of :meth:`ClassBalanced.embed` that holds the task model's probabilities; the inner heuristic's own
#: outputs sit beside it under their own names.
PROBABILITIES_KEY = "class_balanced_probabilities"
#: The labeled set's targets, which the loop adds to ``select``'s ``labeled`` outputs.
TARGET_KEY = "target"


def predicted_groups(probabilities: Tensor, multilabel: bool, labeled_counts: Tensor, num_labeled: int) -> Tensor:
    """The group each candidate is balanced in, int64 ``[n]`` on the CPU.

    Multi-class: the predicted class (argmax; ties: lowest class), groups ``0 .. K-1``. Multi-label: the finding
    whose predicted probability most exceeds its rate in the labeled set, ``argmax_f p_f / r_f`` with
    ``r_f = (positives_f + 1) / (m + 2)`` (ties: lowest finding), if that ratio is at least 1; an image less likely
    than the labeled rate for every finding goes to group ``K``, "no finding". (A threshold of 0.5 would put nearly
    every image in "no finding" while a model knows little of rare findings, and balance nothing.)

    Args:
        probabilities: float ``[n, K]`` (softmax or per-finding sigmoid).
        multilabel: whether ``probabilities`` are per finding.
        labeled_counts: int64 ``[K + 1]`` positives of each finding and the all-negative count in the labeled set
            (multi-label only; see :func:`labeled_group_counts`).
        num_labeled: ``m``, the size of the labeled set.
    """
    probabilities = probabilities.detach().float().cpu()
    if not multilabel:
        return probabilities.argmax(dim=1)
    rate = (labeled_counts[:-1].double() + 1) / (num_labeled + 2)
    lift = probabilities.double() / rate
    best = lift.argmax(dim=1)
    no_finding = lift.gather(1, best[:, None]).squeeze(1) < 1
    return torch.where(no_finding, probabilities.shape[1], best)


def labeled_group_counts(targets: Tensor, num_classes: int) -> Tensor:
    """How many labeled images each group holds, int64 ``[G]``: per class (``G = K``, multi-class targets ``[m]``),
    or per finding with the all-negative images last (``G = K + 1``, multi-label targets ``[m, K]``). Unknown
    targets (``-1``) count nowhere."""
    targets = targets.cpu()
    if targets.ndim == 1:
        return torch.bincount(targets[targets >= 0], minlength=num_classes)
    known = targets[(targets >= 0).all(dim=1)]
    return torch.cat([(known == 1).sum(dim=0), (known == 0).all(dim=1).sum().reshape(1)])


def balanced_quotas(available: Tensor, order: Tensor, budget: int) -> Tensor:
    """Picks per group, int64 ``[G]``: as equal as ``available`` allows, summing to ``budget``.

    Round robin over the groups in ``order``: one pick to each group that has a candidate left, until the budget is
    spent. So every group gets ``min(available, t)`` or ``t + 1`` picks for one level ``t``; a group with too few
    candidates passes what it cannot take on to the others, and the ``t + 1`` go to the groups first in ``order``.

    Args:
        available: int64 ``[G]`` candidates per group; ``budget <= available.sum()``.
        order: int64 ``[G]`` a permutation of the groups, first served first.
        budget: picks in all.
    """
    if budget > int(available.sum()):
        raise ValueError(f"budget {budget} exceeds the {int(available.sum())} candidates")
    quotas = torch.zeros_like(available)
    remaining = budget
    # Whole rounds at once (every group still open gets the same number), then one pick each for the rest.
    while remaining:
        open_groups = order[quotas[order] < available[order]]
        step = max(1, min(remaining // len(open_groups), int((available - quotas)[open_groups].min())))
        if step * len(open_groups) <= remaining:
            quotas[open_groups] += step
            remaining -= step * len(open_groups)
        else:
            quotas[open_groups[:remaining]] += 1
            remaining = 0
    return quotas


class ClassBalanced(HeuristicWrapper):
    """Makes ``heuristic`` pick a batch balanced over the task model's predicted classes (Emam et al., 2021).

    ``embed`` adds the task model's probabilities to the inner heuristic's outputs. ``select`` groups the candidates
    by predicted class (multi-label: by the finding each image most likely shows relative to its rate in the labeled
    set, plus a "no finding" group; :func:`predicted_groups`), orders the groups from the rarest in the labeled set
    to the most common (ties: lowest class; unknown targets count nowhere), splits the budget into equal quotas
    (:func:`balanced_quotas`: a group with too few candidates passes the rest on; the remainder of the division goes
    to the rarest groups), and has the inner heuristic pick each group's quota among that group's candidates, rarest
    group first.

    The picks of earlier groups join the labeled set the inner heuristic sees for later groups (when it reads the
    labeled set at all, ``uses_labeled``): a distance-based heuristic (core-set, MedAL, TypiClust, ProbCover) then
    treats them as the centers, clusters or balls they will be once labeled, as its own greedy pass over the whole
    pool would, and does not pick near a boundary image another class's quota already took. Random draws come from
    the one generator, group after group, so a resumed run picks the same images. Scores in ``labeled.csv``: the
    inner heuristic's, each measured within its group.

    Cost: one more forward pass per candidate (the probabilities), and one ``select`` per group.

    Args:
        heuristic: the heuristic that picks within each group (entropy, core-set, BADGE, ...).

    Example YAML::

        active:
          heuristic:
            class_path: alvae_pl.acquisition.ClassBalanced
            init_args:
              heuristic: {class_path: alvae_pl.acquisition.CoreSet}
    """

    uses_model = True

    def __init__(self, heuristic: Heuristic) -> None:
        if isinstance(heuristic, ClassBalanced):
            raise ValueError("ClassBalanced wraps another heuristic, not a ClassBalanced: remove one level")
        super().__init__(heuristic)

    def candidates(self, unlabeled: Tensor, generator: torch.Generator, pool: LabelPool | None = None) -> Tensor:
        return self.heuristic.candidates(unlabeled, generator, pool)

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        """The inner heuristic's outputs plus ``PROBABILITIES_KEY``: float ``[B, K]`` probabilities (softmax, or
        per-finding sigmoid)."""
        outputs = self.heuristic.embed(model, images) if self.heuristic.uses_model else {}
        outputs[PROBABILITIES_KEY] = scores(model(images).float(), model.task)
        return outputs

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        """The inner heuristic's picks, quota by quota; positions in picking order (rarest group first)."""
        if TARGET_KEY not in labeled:
            raise ValueError("ClassBalanced needs the labeled set's targets (labeled['target']), which the loop passes")
        probabilities = candidates[PROBABILITIES_KEY]
        targets = labeled[TARGET_KEY]
        multilabel = targets.ndim == 2
        counts = labeled_group_counts(targets, probabilities.shape[1])
        groups = predicted_groups(probabilities, multilabel, counts, len(targets))
        order = torch.sort(counts, stable=True).indices  # rarest first; ties: lowest group
        quotas = balanced_quotas(torch.bincount(groups, minlength=len(counts)), order, budget)

        inner_candidates = {key: value for key, value in candidates.items() if key != PROBABILITIES_KEY}
        inner_labeled = {key: value for key, value in labeled.items() if key not in (PROBABILITIES_KEY, TARGET_KEY)}
        positions, picked_scores = [], []
        for group in order.tolist():
            quota = int(quotas[group])
            if quota == 0:
                continue
            rows = torch.nonzero(groups == group).flatten()
            subset = {key: value[rows.to(value.device)] for key, value in inner_candidates.items()}
            selection = self.heuristic.select(subset, inner_labeled, quota, generator)
            picks = rows[selection.positions.cpu()]
            positions.append(picks)
            picked_scores.append(selection.scores.detach().float().cpu())
            if self.uses_labeled:
                inner_labeled = _with_picks(inner_labeled, inner_candidates, picks)
        return Selection(torch.cat(positions), torch.cat(picked_scores))


def _with_picks(labeled: dict[str, Tensor], candidates: dict[str, Tensor], picks: Tensor) -> dict[str, Tensor]:
    """``labeled`` outputs with the candidate rows ``picks`` appended to every output the candidates have (an empty
    labeled set, as on a cold start, may lack the outputs: the picks' rows are then the whole of them)."""
    joined = {}
    for key, values in candidates.items():
        new = values[picks.to(values.device)]
        before = labeled.get(key)
        joined[key] = new if before is None or len(before) == 0 else torch.cat([before.to(new.device), new])
    return joined
