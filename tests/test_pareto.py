"""Pareto ranks, hypervolume and knee: hand-made fronts and independent slow references."""
from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest

from search.objectives import default_reference, objective_matrix
from search.pareto import (
    hypervolume,
    hypervolume_contributions,
    hypervolume_gain,
    knee_point,
    non_dominated_sort,
    pareto_front,
    pareto_mask,
    to_minimise,
)

STAIR_2D = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])  # ref (4, 4): 3 + 2 + 1 unit cells
CORNERS_3D = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # ref (2, 2, 2)


# --- slow, obvious references ---------------------------------------------------------

def hv_inclusion_exclusion(points: np.ndarray, ref: np.ndarray) -> float:
    """Sum over every non-empty subset of (-1)^(|S|+1) * volume of the boxes' intersection."""
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(range(len(points)), size):
            corner = points[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * np.prod(np.clip(ref - corner, 0.0, None))
    return total


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def ranks_by_peeling(points: np.ndarray) -> list[int]:
    """Repeatedly remove the rows that no remaining row dominates."""
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def random_sets(seed: int, k: int, count: int = 30):
    """Small sets in [0, 1.2)^k against ref 1: some points outside, some sets on a grid (ties)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(rng.integers(1, 11))
        if i % 2:
            yield rng.integers(0, 6, size=(n, k)) / 5.0  # duplicates, ties and points on the ref
        else:
            yield rng.uniform(0.0, 1.2, size=(n, k))


# --- flipping and the fusion-nas objective matrix ----------------------------------------

def test_to_minimise_flips_only_max_columns() -> None:
    values = np.array([[0.9, 100.0], [0.5, 10.0]])
    np.testing.assert_array_equal(to_minimise(values, ["max", "min"]), [[-0.9, 100.0], [-0.5, 10.0]])
    np.testing.assert_array_equal(to_minimise([0.9, 100.0], ("max", "min")), [-0.9, 100.0])
    with pytest.raises(ValueError, match="unknown mode 'maximise'"):
        to_minimise(values, ["maximise", "min"])
    with pytest.raises(ValueError, match="1 modes"):
        to_minimise(values, ["min"])


def test_objective_matrix_is_negated_accuracy_and_log10_costs() -> None:
    m = objective_matrix([0.9, 0.8], [1e3, 1e5], [1e6, 1e4])
    np.testing.assert_allclose(m, [[-0.9, 3.0, 6.0], [-0.8, 5.0, 4.0]])
    assert objective_matrix([0.9], [1e3]).shape == (1, 2)
    assert np.isnan(objective_matrix([np.nan], [1e3])[0, 0])  # failed trial passes through
    with pytest.raises(ValueError, match="params must be > 0"):
        objective_matrix([0.9], [0.0])
    with pytest.raises(ValueError, match="equal length"):
        objective_matrix([0.9, 0.8], [1e3])


def test_default_reference_is_a_whole_decade_at_least_ten_times_the_max() -> None:
    np.testing.assert_array_equal(default_reference([1e3, 1e5]), [0.0, 6.0])
    np.testing.assert_array_equal(default_reference([2e5, np.nan], [3e7]), [0.0, 7.0, 9.0])
    # slightly different maxima in one decade give the same point: comparable hypervolumes
    np.testing.assert_array_equal(default_reference([1.5e4]), default_reference([9e4]))
    with pytest.raises(ValueError, match="flops"):
        default_reference([1e3], [np.nan])


def test_fusion_hypervolume_by_hand() -> None:
    # acc 0.9 at 1e3 params, acc 0.5 at 1e2; ref [0, 4]: boxes 0.9 x 1 and 0.5 x 2 overlap 0.5 x 1
    m = objective_matrix([0.9, 0.5], [1e3, 1e2])
    assert hypervolume(m, default_reference([1e3, 1e2])) == pytest.approx(0.9 + 1.0 - 0.5)


# --- fronts and ranks --------------------------------------------------------------------

def test_non_dominated_sort_by_hand_with_duplicates_and_nan() -> None:
    points = np.array([
        [1.0, 3.0], [2.0, 2.0], [3.0, 1.0],  # front
        [2.0, 3.0],                          # dominated by (1, 3) and (2, 2)
        [3.0, 3.0],                          # dominated by (2, 3)
        [2.0, 2.0],                          # duplicate of a front point: also front
        [np.nan, 0.0],                       # failed trial
    ])
    np.testing.assert_array_equal(non_dominated_sort(points), [0, 0, 0, 1, 2, 0, 3])
    np.testing.assert_array_equal(pareto_mask(points), [1, 1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(pareto_front(points), points[[0, 1, 2, 5]])


def test_nan_rows_are_never_rank_zero() -> None:
    np.testing.assert_array_equal(non_dominated_sort(np.full((2, 3), np.nan)), [1, 1])
    assert not pareto_mask(np.full((2, 3), np.nan)).any()
    assert non_dominated_sort(np.empty((0, 2))).shape == (0,)


def test_inf_takes_part_in_dominance() -> None:
    # (0, inf) is beaten by (-inf, 5), and beats (1, inf): inf <= inf ties like any value
    points = np.array([[0.0, np.inf], [1.0, 1.0], [1.0, np.inf], [-np.inf, 5.0]])
    np.testing.assert_array_equal(non_dominated_sort(points), [1, 0, 2, 0])


@pytest.mark.parametrize("k", [2, 3, 4])
def test_non_dominated_sort_matches_pairwise_peeling(k: int) -> None:
    for points in random_sets(seed=10 + k, k=k):
        ranks = non_dominated_sort(points)
        assert ranks.tolist() == ranks_by_peeling(points)
        np.testing.assert_array_equal(pareto_mask(points), ranks == 0)


def test_non_dominated_sort_matches_optuna() -> None:
    mo = importlib.import_module("optuna.study._multi_objective")  # a dependency: never skipped
    for points in random_sets(seed=3, k=3):
        expected = mo._calculate_nondomination_rank(points)
        np.testing.assert_array_equal(non_dominated_sort(points), expected)


# --- hypervolume by hand -----------------------------------------------------------------

def test_hypervolume_2d_by_hand() -> None:
    assert hypervolume(STAIR_2D, [4.0, 4.0]) == 6.0
    # (10-2)(10-6) + (10-5)(6-3) = 32 + 15
    assert hypervolume([[2.0, 6.0], [5.0, 3.0]], [10.0, 10.0]) == 47.0
    assert hypervolume([[1.0, 1.0]], [4.0, 4.0]) == 9.0


def test_hypervolume_3d_by_hand() -> None:
    # three 2-unit boxes, pairwise and triple overlap the unit cube at (1, 1, 1): 6 - 3 + 1
    assert hypervolume(CORNERS_3D, [2.0, 2.0, 2.0]) == 4.0
    # (3*2*1) + (4*1*2) - overlap at (1, 2, 1): 3*1*1
    assert hypervolume([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]], [4.0, 3.0, 2.0]) == 11.0
    # fills the missing (0, 0) cell of the z >= 1 slice, depth 0.5
    with_fourth = np.vstack([CORNERS_3D, [0.0, 0.0, 1.5]])
    assert hypervolume(with_fourth, [2.0, 2.0, 2.0]) == 4.5


def test_hypervolume_gain_and_contributions_by_hand() -> None:
    ref = np.array([2.0, 2.0, 2.0])
    assert hypervolume_gain(CORNERS_3D, [0.0, 0.0, 1.5], ref) == 0.5
    assert hypervolume_gain(CORNERS_3D, [1.0, 1.0, 1.0], ref) == 0.0  # dominated
    assert hypervolume_gain(CORNERS_3D, [np.nan, 0.0, 0.0], ref) == 0.0
    assert hypervolume_gain(np.empty((0, 3)), [1.0, 1.0, 1.0], ref) == 1.0
    np.testing.assert_array_equal(hypervolume_contributions(CORNERS_3D, ref), [1.0, 1.0, 1.0])
    twins = np.vstack([STAIR_2D, STAIR_2D[1]])
    np.testing.assert_array_equal(hypervolume_contributions(twins, [4.0, 4.0]), [1.0, 0.0, 1.0, 0.0])


def test_hypervolume_ignores_nan_inf_and_points_not_strictly_inside_ref() -> None:
    ref = [4.0, 4.0]
    extra = [
        [np.nan, 0.0],      # failed trial
        [0.0, np.inf],      # infinitely bad in one objective
        [0.0, 4.0],         # on the ref: zero-width box
        [-np.inf, 5.0],     # -inf but outside the ref in the other objective
        [-np.inf, 4.0],     # -inf but on the ref: an empty box, not inf * 0
        [5.0, 0.0],         # outside the ref
    ]
    assert hypervolume(np.vstack([STAIR_2D, extra]), ref) == 6.0
    assert hypervolume(np.empty((0, 2)), ref) == 0.0
    assert hypervolume([[np.nan, np.nan]], ref) == 0.0


def test_hypervolume_errors() -> None:
    with pytest.raises(ValueError, match="infinite hypervolume"):
        hypervolume([[-np.inf, 1.0]], [4.0, 4.0])
    with pytest.raises(ValueError, match="ref must be finite"):
        hypervolume(STAIR_2D, [4.0, np.inf])
    with pytest.raises(ValueError, match="ref has shape"):
        hypervolume(STAIR_2D, [4.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="n_points, n_objectives"):
        hypervolume([1.0, 2.0], [4.0, 4.0])


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_invariant_to_order_duplicates_and_dominated_points(k: int) -> None:
    rng = np.random.default_rng(k)
    ref = np.ones(k)
    for points in random_sets(seed=20 + k, k=k, count=15):
        hv = hypervolume(points, ref)
        assert hypervolume(points[rng.permutation(len(points))], ref) == pytest.approx(hv, abs=1e-12)
        assert hypervolume(np.vstack([points, points[:3]]), ref) == pytest.approx(hv, abs=1e-12)
        dominated = points + rng.uniform(0.0, 0.3, size=points.shape)
        assert hypervolume(np.vstack([points, dominated]), ref) == pytest.approx(hv, abs=1e-12)
        assert hypervolume(pareto_front(points), ref) == pytest.approx(hv, abs=1e-12)


# --- hypervolume against independent implementations -------------------------------------

@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(k: int) -> None:
    ref = np.ones(k)
    count = 30 if k < 4 else 10
    for points in random_sets(seed=k, k=k, count=count):
        assert abs(hypervolume(points, ref) - hv_inclusion_exclusion(points, ref)) < 1e-9


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_matches_optuna(k: int) -> None:
    hv_mod = importlib.import_module("optuna._hypervolume")
    ref = np.ones(k)
    for points in random_sets(seed=40 + k, k=k):
        inside = points[np.all(points < ref, axis=1)]  # optuna wants every point <= ref
        expected = hv_mod.compute_hypervolume(inside, ref) if len(inside) else 0.0
        assert hypervolume(points, ref) == pytest.approx(expected, abs=1e-9)


# --- knee ---------------------------------------------------------------------------------

def test_knee_by_hand_2d() -> None:
    # normalised distances to (0, 0): 1, 0.539, 0.424, 1
    front = np.array([[0.0, 1.0], [0.2, 0.5], [0.3, 0.3], [1.0, 0.0]])
    assert knee_point(front) == 2
    assert knee_point(front * [1000.0, 0.01]) == 2  # units do not matter
    # a dominated outlier must not stretch the normalisation (it would make row 0 the knee)
    assert knee_point(np.vstack([front, [0.5, 10.0]])) == 2
    assert knee_point(np.vstack([[np.nan, -1.0], front])) == 3


def test_knee_by_hand_3d() -> None:
    points = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.2, 0.2], [0.5, 0.5, 0.5]])
    assert knee_point(points) == 3


def test_knee_of_small_fronts_and_ties() -> None:
    assert knee_point([[0.3, 0.7]]) == 0
    assert knee_point([[2.0, 2.0], [0.3, 0.7]]) == 1  # only one point on the front
    # two trade-off points are equally far: the better first objective wins, in any row order
    assert knee_point([[1.0, 0.0], [0.0, 1.0]]) == 1
    assert knee_point([[0.0, 1.0], [1.0, 0.0]]) == 0
    assert knee_point([[0.0, 1.0], [0.0, 1.0]]) == 0
    with pytest.raises(ValueError, match="no finite point"):
        knee_point([[np.nan, 1.0]])


def test_knee_is_the_same_point_after_shuffling() -> None:
    rng = np.random.default_rng(7)
    points = rng.uniform(size=(25, 3))
    knee = points[knee_point(points)]
    for _ in range(5):
        shuffled = points[rng.permutation(len(points))]
        np.testing.assert_array_equal(shuffled[knee_point(shuffled)], knee)
