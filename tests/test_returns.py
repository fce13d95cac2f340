"""The discounted episode returns `target_floor: return` floors Bellman targets at, and n-step look-aheads."""

from __future__ import annotations

import numpy as np
import pytest

from awac_robot.train.returns import episode_returns, n_step_rows, returns_of_episodes


def test_a_truncated_success_keeps_the_value_of_staying_solved() -> None:
    returns = episode_returns(np.array([-1.0, -1.0, 0.0, 0.0]), np.zeros(4), 0.5)
    np.testing.assert_allclose(returns, [-1.5, -1.0, 0.0, 0.0])


def test_a_truncated_failure_is_held_at_the_lowest_value() -> None:
    returns = episode_returns(np.full(3, -1.0), np.zeros(3), 0.9)
    np.testing.assert_allclose(returns, [-10.0, -10.0, -10.0], rtol=1e-6)  # -1 / (1 - 0.9): no information


def test_a_terminal_state_earns_nothing_after_it() -> None:
    returns = episode_returns(np.array([-1.0, -1.0]), np.array([0.0, 1.0]), 0.5)
    np.testing.assert_allclose(returns, [-1.5, -1.0])


def test_episodes_are_packed_row_after_row() -> None:
    reward = np.array([-1.0, 0.0, -1.0, -1.0, -1.0])
    terminal = np.zeros(5)
    packed = returns_of_episodes(reward, terminal, np.array([2, 3]), 0.5)
    np.testing.assert_allclose(packed, [-1.0, 0.0, -2.0, -2.0, -2.0])
    with pytest.raises(ValueError, match="lengths sum to 4, but there are 5 rows"):
        returns_of_episodes(reward, terminal, np.array([2, 2]), 0.5)


def test_an_undiscounted_tail_is_refused() -> None:
    with pytest.raises(ValueError, match="discount in \\(0, 1\\)"):
        episode_returns(np.zeros(2), np.zeros(2), 1.0)


def test_n_step_rows_look_ahead_inside_their_own_episode_only() -> None:
    last, steps = n_step_rows(np.array([4, 2]), 3)
    np.testing.assert_array_equal(steps, [3, 3, 2, 1, 2, 1])  # an episode's last rows reach only its end
    np.testing.assert_array_equal(last, [2, 3, 3, 3, 5, 5])  # never into the next episode
    one_last, one_steps = n_step_rows(np.array([3]), 1)
    np.testing.assert_array_equal(one_last, [0, 1, 2])
    np.testing.assert_array_equal(one_steps, [1, 1, 1])
    with pytest.raises(ValueError, match="n >= 1"):
        n_step_rows(np.array([3]), 0)
