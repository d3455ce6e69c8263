"""The label pool: what is labeled, in which order, and what survives a checkpoint."""

from __future__ import annotations

import io

import pytest
import torch

from alvae_pl.data.label_pool import LabelOrigin, LabelPool, origin_text


def test_pool_is_a_seeded_subset_with_seeded_initial_labels() -> None:
    pool = LabelPool(train_size=1000, pool_size=300, initial_labels=30, pool_seed=7)
    again = LabelPool(train_size=1000, pool_size=300, initial_labels=30, pool_seed=7)
    other = LabelPool(train_size=1000, pool_size=300, initial_labels=30, pool_seed=8)
    assert len(pool) == 300 and pool.num_labeled == 30 and pool.num_unlabeled == 270
    assert len(pool.dataset_indices.unique()) == 300 and pool.dataset_indices.max() < 1000
    assert torch.equal(pool.dataset_indices, again.dataset_indices) and torch.equal(pool.labeled, again.labeled)
    assert not torch.equal(pool.labeled, other.labeled)
    assert set(pool.labeled.tolist()).isdisjoint(pool.unlabeled.tolist())


def test_labeled_set_only_grows_by_what_is_labeled_and_never_twice() -> None:
    pool = LabelPool(train_size=100, pool_size=None, initial_labels=10, pool_seed=0)
    before = pool.labeled.clone()
    picks = pool.unlabeled[:5]
    pool.label(picks, round_index=1)
    assert torch.equal(pool.labeled[:10], before) and torch.equal(pool.labeled[10:], picks)
    assert pool.labeled_rounds.tolist() == [0] * 10 + [1] * 5
    with pytest.raises(ValueError, match="already labeled"):
        pool.label(picks[:1], round_index=2)
    with pytest.raises(ValueError, match="twice"):
        pool.label(torch.tensor([pool.unlabeled[0], pool.unlabeled[0]]), round_index=2)
    with pytest.raises(ValueError, match="must lie in"):
        pool.label(torch.tensor([100]), round_index=2)
    assert pool.num_labeled == 15


@pytest.mark.parametrize(
    ("pool_size", "initial", "message"),
    [(2000, 10, "pool_size=2000"), (100, 0, "initial_labels=0"), (50, 51, "initial")],
)
def test_impossible_sizes_say_what_to_set(pool_size: int, initial: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelPool(train_size=1000, pool_size=pool_size, initial_labels=initial, pool_seed=0)


def test_state_round_trips_through_a_weights_only_checkpoint() -> None:
    pool = LabelPool(train_size=500, pool_size=200, initial_labels=20, pool_seed=3)
    pool.label(pool.unlabeled[[5, 1, 9]], round_index=1)
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = LabelPool(train_size=500, pool_size=200, initial_labels=20, pool_seed=3)
    restored.load_state_dict(state)
    assert torch.equal(restored.labeled, pool.labeled)
    assert torch.equal(restored.labeled_rounds, pool.labeled_rounds)
    assert torch.equal(restored.unlabeled, pool.unlabeled)
    mismatched = LabelPool(train_size=500, pool_size=200, initial_labels=20, pool_seed=4)
    with pytest.raises(ValueError, match="pool_seed"):
        mismatched.load_state_dict(state)
    other_initial = LabelPool(train_size=500, pool_size=200, initial_labels=21, pool_seed=3)
    with pytest.raises(ValueError, match="initial labels differ"):
        other_initial.load_state_dict(state)


def test_a_labs_initial_labels_are_the_given_positions_in_the_whole_pool() -> None:
    pool = LabelPool(
        train_size=50, pool_size=None, initial_labels=0, pool_seed=0, initial_positions=torch.tensor([9, 2])
    )
    assert pool.labeled.tolist() == [2, 9] and pool.labeled_rounds.tolist() == [0, 0]
    assert torch.equal(pool.dataset_indices, torch.arange(50)) and pool.num_unlabeled == 48
    with pytest.raises(ValueError, match="set data.pool_size: null"):
        LabelPool(train_size=50, pool_size=20, initial_labels=0, pool_seed=0, initial_positions=torch.tensor([1]))
    with pytest.raises(ValueError, match="label a few in the labels CSV"):
        LabelPool(train_size=50, pool_size=None, initial_labels=0, pool_seed=0, initial_positions=torch.tensor([]))


def _origins(pool: LabelPool) -> list[str]:
    return [origin_text(o, r) for o, r in zip(pool.labeled_origins.tolist(), pool.labeled_rounds.tolist(), strict=True)]


def test_origins_are_kept_in_the_state_and_derived_for_checkpoints_without_them() -> None:
    drawn = LabelPool(train_size=100, pool_size=None, initial_labels=3, pool_seed=0)
    drawn.label(drawn.unlabeled[:2], round_index=1)
    given = LabelPool(train_size=50, pool_size=None, initial_labels=0, pool_seed=0, initial_positions=torch.tensor([4]))
    given.label(torch.tensor([7]), round_index=2)
    assert _origins(drawn) == ["random draw"] * 3 + ["answer to round 1"] * 2
    assert _origins(given) == ["labels file", "answer to round 2"]
    for pool, rebuild in (
        (drawn, lambda: LabelPool(train_size=100, pool_size=None, initial_labels=3, pool_seed=0)),
        (given, lambda: LabelPool(50, None, 0, 0, initial_positions=torch.tensor([4]))),
    ):
        restored = rebuild()
        restored.load_state_dict(pool.state_dict())
        assert torch.equal(restored.labeled_origins, pool.labeled_origins)
        old = {k: v for k, v in pool.state_dict().items() if k != "labeled_origins"}  # an earlier release's state
        legacy = rebuild()
        legacy.load_state_dict(old)
        assert torch.equal(legacy.labeled_origins, pool.labeled_origins)
    cold = LabelPool(train_size=20, pool_size=None, initial_labels=0, pool_seed=0, defer_initial=True)
    cold.label(torch.tensor([3, 5]), round_index=0)
    legacy = LabelPool(train_size=20, pool_size=None, initial_labels=0, pool_seed=0, defer_initial=True)
    legacy.load_state_dict({k: v for k, v in cold.state_dict().items() if k != "labeled_origins"})
    assert [origin_text(o, 0) for o in legacy.labeled_origins.tolist()] == ["answer to round 0"] * 2
    assert LabelOrigin.ANSWER in cold.labeled_origins.tolist()
