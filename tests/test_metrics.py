import math

import pytest

from bench import metrics as M

# rows: after step t (0 = before training); columns: tasks 1..3
R = [[10, 20, 30],
     [50, 25, 31],
     [40, 60, 33],
     [45, 55, 70]]


def test_final_average():
    assert M.final_average(R) == pytest.approx((45 + 55 + 70) / 3)


def test_bwt():
    # tasks 1, 2: R[3][j] - R[j][j] (1-based): (45-50) + (55-60)
    assert M.bwt(R) == pytest.approx(((45 - 50) + (55 - 60)) / 2)


def test_fwt():
    # tasks 2, 3: R[j-1][j] - R[0][j]: (25-20) + (33-30)
    assert M.fwt(R) == pytest.approx(((25 - 20) + (33 - 30)) / 2)


def test_forgetting():
    # task 1: max(R[1][1], R[2][1]) - R[3][1] = 50 - 45; task 2: max(R[2][2]) - R[3][2] = 60 - 55
    assert M.forgetting(R) == pytest.approx(5.0)
    # a task that keeps improving after it was learned: the final row is not part of the max (negative)
    improving = [[10, 10], [20, 10], [30, 40]]
    assert M.forgetting(improving) == pytest.approx(20 - 30)


def test_plasticity():
    assert M.plasticity(R) == pytest.approx((50 + 60 + 70) / 3)


def test_undefined_entries_are_skipped():
    Racc = [[None, 5, None], [None, 6, None], [None, 9, None], [None, 7, None]]
    assert M.final_average(Racc) == 7
    assert M.bwt(Racc) == pytest.approx(7 - 9)
    assert M.plasticity(Racc) == 9
    assert M.bwt([[None] * 2] * 3) is None
    assert M.final_average([[math.nan, 1.0], [math.nan, 3.0], [math.nan, 5.0]]) == 5.0


def test_final_old_average_ignores_last_task():
    D = [[None, None], [0.0, None], [0.2, 0.0]]
    assert M.final_old_average(D) == pytest.approx(0.2)


def test_shape_is_checked():
    with pytest.raises(ValueError, match="T\\+1 rows"):
        M.bwt([[1, 2], [3, 4]])


def test_mean_std():
    assert M.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert M.mean_std([4.0]) == (4.0, 0.0)
    assert M.mean_std([None]) == (None, None)


def test_mtil_transfer_and_average_by_hand():
    from bench.metrics import average, transfer
    R = [[10, 20, 30],        # zero-shot row: left out of both
         [50, 25, 35],
         [40, 60, 45],
         [30, 55, 70]]
    # Transfer: task 2 before it is learned: R[1][1] = 25; task 3: R[1][2], R[2][2] = 35, 45 -> 40; mean 32.5
    assert transfer(R) == 32.5
    # Avg: every entry of rows 1..3: 410 / 9
    assert average(R) == pytest.approx(410 / 9)
    assert transfer([[None, None], [1.0, None], [2.0, 3.0]]) is None       # undefined entries are skipped
