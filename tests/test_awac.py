"""The AWAC update's math, the networks, the replay and the config -- no env needed."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from train_helpers import one_thread  # noqa: F401 -- the fixture, used by pytestmark

from awac_robot.spec import TaskSpec
from awac_robot.train.awac import ESS_TEMPERATURES, Batch, NonFiniteError, advantage_weights
from awac_robot.train.build import build_learner
from awac_robot.train.config import ConfigError, TrainConfig, from_dict, from_saved, load_config
from awac_robot.train.networks import CriticEnsemble
from awac_robot.train.replay import Replay

OBS, ACT = 3, 2
pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = TrainConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=64, threads=1, lr=1e-3, awr_lambda=0.3)


def toy_spec() -> TaskSpec:
    return TaskSpec("toy", "test", OBS, ACT, (-1.0,) * ACT, (1.0,) * ACT, 0.01, 1)


def test_advantage_weights_sum_to_batch_and_never_overflow() -> None:
    advantage = torch.tensor([1e6, -1e6, 0.0, 3.0, 3.0, 50.0])
    weights = advantage_weights(advantage, 0.3)
    assert torch.isfinite(weights).all()
    assert weights.sum().item() == pytest.approx(len(advantage), rel=1e-5)
    assert weights.argmax().item() == 0
    ordinary = advantage_weights(torch.tensor([0.0, 0.3 * torch.log(torch.tensor(2.0)).item()]), 0.3)
    assert ordinary[1].item() == pytest.approx(2 * ordinary[0].item(), rel=1e-5)  # exp(A / lambda) ratios kept


def test_batch_std_weights_do_not_depend_on_the_scale_of_q() -> None:
    advantage = torch.tensor([0.3, -0.1, 0.05, 0.2, -0.4])
    small = advantage_weights(advantage, 1.0, "batch_std")
    torch.testing.assert_close(advantage_weights(100.0 * advantage - 7.0, 1.0, "batch_std"), small)
    torch.testing.assert_close(small, advantage_weights(advantage, advantage.std().item()))  # lambda * std(A)
    assert not torch.allclose(advantage_weights(100.0 * advantage, 1.0), advantage_weights(advantage, 1.0))
    torch.testing.assert_close(advantage_weights(torch.full((4,), -3.0), 1.0, "batch_std"), torch.ones(4))


def ess(weights: torch.Tensor) -> float:
    return float(weights.sum().square() / weights.dot(weights))


@pytest.mark.parametrize("target", [0.1, 0.25, 0.5])
def test_ess_weights_hold_their_effective_sample_size_whatever_the_advantages_look_like(target: float) -> None:
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(256, generator=generator)
    shapes = {
        "small (door-human)": 0.1 * normal,
        "heavy-tailed (door-paper)": 5.0 * normal**3,
        "one outlier": torch.cat([torch.zeros(255), torch.tensor([50.0])]),
    }
    for name, advantage in shapes.items():
        weights = advantage_weights(advantage, 1.0, "ess", target)
        assert weights.sum().item() == pytest.approx(256, rel=1e-5), name
        assert ess(weights) >= target * 256, name
        # the weights of the sharpest temperature on the grid that holds the target, found by trying each in turn
        tried = [ess(advantage_weights(advantage, t * advantage.std().item())) for t in ESS_TEMPERATURES.tolist()]
        chosen = min(i for i, value in enumerate(tried) if value >= target * 256)
        assert chosen > 0, name  # a target the sharpest temperature already holds would not test the choice
        torch.testing.assert_close(
            weights, advantage_weights(advantage, ESS_TEMPERATURES[chosen].item() * advantage.std().item())
        )
        torch.testing.assert_close(advantage_weights(1e3 * advantage - 7.0, 1.0, "ess", target), weights)
        assert weights.argmax() == advantage.argmax(), name
    torch.testing.assert_close(advantage_weights(torch.full((8,), -3.0), 1.0, "ess"), torch.ones(8))


def test_ess_floor_keeps_lambda_unless_its_weights_imitate_too_few_rows() -> None:
    normal = torch.randn(256, generator=torch.Generator().manual_seed(0))
    small = 0.1 * normal  # lambda 1 gives nearly uniform weights: kept as they are
    torch.testing.assert_close(advantage_weights(small, 1.0, "ess_floor", 0.05), advantage_weights(small, 1.0))
    heavy = 5.0 * normal**3  # lambda 1 puts the batch on a row or two: the "ess" temperature instead
    assert ess(advantage_weights(heavy, 1.0)) < 0.05 * 256
    floored = advantage_weights(heavy, 1.0, "ess_floor", 0.05)
    torch.testing.assert_close(floored, advantage_weights(heavy, 1.0, "ess", 0.05))
    assert ess(floored) >= 0.05 * 256 and floored.sum().item() == pytest.approx(256, rel=1e-5)


def test_td_error_softens_the_weights_only_as_far_as_the_critics_are_off() -> None:
    advantage = 2.0 * torch.randn(256, generator=torch.Generator().manual_seed(1))
    fitted = advantage_weights(advantage, 1.0, "td_error", td_error=torch.tensor(0.2))
    torch.testing.assert_close(fitted, advantage_weights(advantage, 1.0))  # error below lambda: the paper's
    off = advantage_weights(advantage, 1.0, "td_error", td_error=torch.tensor(3.0))
    torch.testing.assert_close(off, advantage_weights(advantage, 3.0))
    assert ess(off) > ess(fitted)
    with pytest.raises(ValueError, match="needs the batch's td_error"):
        advantage_weights(advantage, 1.0, "td_error")


def test_td_error_takes_its_temperature_from_the_batchs_own_bellman_error() -> None:
    torch.manual_seed(0)
    replay = bandit_replay(512)
    config = SMALL.replace(advantage_scale="td_error", awr_lambda=1e-4)  # so the critics' error always rules
    learner = build_learner(config, toy_spec(), replay.offline_obs())
    for _ in range(20):
        learner.update(replay.sample(config.batch_size))
    batch = replay.sample(config.batch_size)
    noise = (learner._noise(batch.action), learner._noise(batch.action))
    _, stats = learner.losses(batch, noise)
    td_error = stats["td_error"]
    # critic_loss sums each member's mean squared error: the RMS over members and rows is the same error
    assert td_error.item() == pytest.approx((stats["critic_loss"] / config.critic_members).sqrt().item(), rel=1e-5)
    assert td_error.item() > 1e-3
    learner.config = dataclasses.replace(learner.config, advantage_scale="none", awr_lambda=td_error.item())
    _, plain = learner.losses(batch, noise)  # the paper's weights at that lambda: the same actor loss
    assert plain["actor_loss"].item() == pytest.approx(stats["actor_loss"].item(), rel=1e-5)
    assert plain["weight_ess"].item() == pytest.approx(stats["weight_ess"].item(), rel=1e-5)


@pytest.mark.parametrize("scale", ["none", "batch_std", "ess", "ess_floor", "td_error"])
def test_rows_left_out_of_imitation_weigh_nothing_and_the_rest_are_a_softmax_of_their_own(scale: str) -> None:
    advantage = 0.5 * torch.randn(64, generator=torch.Generator().manual_seed(2))
    imitate = torch.arange(64) % 3 == 0
    advantage[~imitate] += 10.0  # the left-out rows have the largest advantages: they must still weigh 0
    td_error = torch.tensor(0.5)  # the critics' error, used by "td_error" alone
    weights = advantage_weights(advantage, 0.3, scale, 0.25, imitate, td_error)
    assert (weights[~imitate] == 0).all()
    assert weights.sum().item() == pytest.approx(64, rel=1e-5)  # the loss stays a weighted mean over the batch
    if scale == "none":
        torch.testing.assert_close(weights[imitate], 64 * torch.softmax(advantage[imitate] / 0.3, 0))
    if scale in ("ess", "ess_floor"):
        assert ess(weights) >= 0.25 * imitate.sum().item()  # the target is a share of the imitated rows
    nothing = torch.zeros(64, dtype=torch.bool)
    assert (advantage_weights(advantage, 0.3, scale, 0.25, nothing, td_error) == 0).all()


def test_imitate_online_solved_fits_the_actor_to_imitated_rows_only() -> None:
    torch.manual_seed(0)
    replay = bandit_replay(512)
    for _ in range(512):  # online rows that never get marked: a failed episode, good actions or not
        replay.add_step(
            torch.zeros(OBS).numpy(), torch.tensor([-0.9, 0.9]).numpy(), 0.0, torch.zeros(OBS).numpy(), True
        )
    configs = {rule: SMALL.replace(imitate_online=rule) for rule in ("all", "solved")}
    learners = {rule: build_learner(config, toy_spec(), replay.offline_obs()) for rule, config in configs.items()}
    for _ in range(300):
        batch = replay.sample(SMALL.batch_size)
        stats = {rule: learner.update(batch) for rule, learner in learners.items()}
    assert 0.4 < stats["solved"]["imitated"].item() < 0.6 and "imitated" not in stats["all"]
    probe = torch.zeros(1, OBS)
    assert learners["all"].actor(probe)[0, 1].item() > 0.5  # copies the online rows' second action
    assert abs(learners["solved"].actor(probe)[0, 1].item()) < 0.3  # the offline data's, uniform around 0
    replay.end_episode(True, np.zeros(512))  # the episode ended solved after all: now its rows are imitated
    assert replay.sample(4000).imitate.float().mean().item() == 1.0
    with pytest.raises(ValueError, match="cannot mark the last 513 rows"):
        replay.end_episode(True, np.zeros(513))


def test_target_ess_is_checked() -> None:
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="'target_ess' must"):
            TrainConfig(target_ess=bad)


def test_an_unknown_imitate_online_rule_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="'imitate_online' must be one of"):
        TrainConfig(imitate_online="succeeded")


def test_a_saved_config_that_predates_a_changed_default_keeps_the_value_it_ran_with() -> None:
    saved = {k: v for k, v in TrainConfig().to_dict().items() if k != "imitate_online"}  # saved before the key
    assert TrainConfig().imitate_online == "solved"
    assert from_saved(saved, "checkpoint").imitate_online == "all"
    assert from_saved({**saved, "imitate_online": "solved"}, "checkpoint").imitate_online == "solved"


def test_an_unknown_advantage_scale_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="'advantage_scale' must be one of"):
        TrainConfig(advantage_scale="per_member")


@pytest.mark.parametrize("layer_norm", [False, True])
def test_batched_critic_matches_member_by_member_mlps(layer_norm: bool) -> None:
    torch.manual_seed(0)
    critic = CriticEnsemble(OBS, ACT, (16, 8), members=3, layer_norm=layer_norm)
    norm = (lambda h: torch.nn.functional.layer_norm(h, h.shape[-1:])) if layer_norm else (lambda h: h)
    obs, act = torch.randn(5, OBS), torch.randn(5, ACT)
    q = critic(obs, act)
    assert q.shape == (3, 5)
    for m in range(3):
        x = torch.cat([obs, act], 1)
        w0 = torch.cat([critic.w_obs[m], critic.w_act[m]])
        h = torch.relu(norm(x @ w0 + critic.b0[m]))
        h = torch.relu(norm(h @ critic.weights[0][m] + critic.biases[0][m]))
        expected = (h @ critic.weights[1][m] + critic.biases[1][m]).squeeze(-1)
        torch.testing.assert_close(q[m], expected)


def bandit_replay(n: int = 4096) -> Replay:
    """A one-step task: reward 0 when action[0] > 0, else -1; actions uniform, so the data is half good."""
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(n, OBS, generator=gen) * 0.1
    action = torch.rand(n, ACT, generator=gen) * 2 - 1
    reward = torch.where(action[:, 0] > 0, 0.0, -1.0)
    data = SimpleNamespace(obs=obs, action=action, reward=reward, next_obs=obs, terminal=torch.ones(n))
    return Replay.from_offline(OBS, ACT, data, capacity=n, seed=0)


def test_update_moves_the_policy_toward_high_advantage_actions() -> None:
    torch.manual_seed(0)
    replay = bandit_replay()
    awac = build_learner(SMALL, toy_spec(), replay.offline_obs())
    bc = build_learner(SMALL.replace(algo="bc"), toy_spec(), replay.offline_obs())
    probe = torch.zeros(1, OBS)
    for _ in range(400):
        batch = replay.sample(SMALL.batch_size)
        stats = awac.update(batch)
        bc.update(batch)
    assert stats["weight_max"].item() > 1.5  # the weights discriminate
    assert awac.actor(probe)[0, 0].item() > 0.3  # good half of the action space
    assert abs(bc.actor(probe)[0, 0].item()) < 0.2  # cloning the uniform data stays near its mean
    q = awac.critic(probe.expand(2, OBS), torch.tensor([[0.8, 0.0], [-0.8, 0.0]]))
    assert (q[:, 0] > q[:, 1] + 0.5).all()  # both critics learned the reward


def test_target_critics_trail_by_soft_updates() -> None:
    replay = bandit_replay(256)
    learner = build_learner(SMALL, toy_spec(), replay.offline_obs())
    before = [p.clone() for p in learner.target_critic.parameters()]
    learner.update(replay.sample(64))
    tau = SMALL.target_tau
    for old, new, online in zip(before, learner.target_critic.parameters(), learner.critic.parameters(), strict=True):
        torch.testing.assert_close(new, old + tau * (online.detach() - old))
        assert not new.requires_grad
        assert not torch.equal(new, online)


def test_non_finite_loss_names_the_update() -> None:
    replay = bandit_replay(256)
    learner = build_learner(SMALL, toy_spec(), replay.offline_obs())
    learner.update(replay.sample(64))
    batch = replay.sample(64)
    poisoned = Batch(batch.obs, batch.action, batch.reward.clone().fill_(float("nan")), batch.next_obs, batch.terminal)
    with pytest.raises(NonFiniteError, match="update 2"):
        learner.update(poisoned)


def test_replay_mixing_draws_the_offline_share() -> None:
    replay = bandit_replay(1000)
    for _ in range(50):
        replay.add_step(
            torch.full((OBS,), 7.0).numpy(), torch.zeros(ACT).numpy(), -1.0, torch.zeros(OBS).numpy(), False
        )
    batch = replay.sample(200, offline_fraction=0.25)
    online = (batch.obs[:, 0] == 7.0).sum().item()
    assert online == 150
    uniform = replay.sample(4000)
    assert 0.02 < (uniform.obs[:, 0] == 7.0).float().mean().item() < 0.08  # 50 of 1050 rows


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 128\nawr_lamda: 0.5\n")
    with pytest.raises(ConfigError, match="unknown field 'awr_lamda'"):
        load_config(path)
    path.write_text("batch_size: 12.5\n")
    with pytest.raises(ConfigError, match="'batch_size' must be int"):
        load_config(path)
    path.write_text("actor_hidden: [64, 64]\noffline_fraction: 0.5\nlr: 1\n")
    config = load_config(path)
    assert config.actor_hidden == (64, 64) and config.offline_fraction == 0.5 and config.lr == 1.0
    with pytest.raises(ConfigError, match="awr_lambda"):
        from_dict({"awr_lambda": 0}, "here")
    with pytest.raises(ConfigError, match="algo"):
        TrainConfig(algo="sac")


def test_averaged_policy_trails_the_actor_and_is_what_gets_evaluated() -> None:
    replay = bandit_replay(256)
    plain = build_learner(SMALL.replace(policy_average=None), toy_spec(), replay.offline_obs())
    assert plain.policy is plain.actor  # the paper's behaviour: the actor itself is the policy
    learner = build_learner(SMALL.replace(policy_average=0.25), toy_spec(), replay.offline_obs())
    before = [p.clone() for p in learner.policy.parameters()]
    learner.update(replay.sample(64))
    for old, avg, actor in zip(before, learner.policy.parameters(), learner.actor.parameters(), strict=True):
        torch.testing.assert_close(avg, old + 0.25 * (actor.detach() - old))
        assert not avg.requires_grad
    restored = build_learner(SMALL.replace(policy_average=0.25), toy_spec(), replay.offline_obs())
    restored.load_state_dict(learner.state_dict())
    probe = torch.randn(4, OBS)
    torch.testing.assert_close(restored.policy(probe), learner.policy(probe))
    assert not torch.equal(learner.policy(probe), learner.actor(probe))


def floored_replay(n: int = 2048) -> Replay:
    """Two states that loop on themselves at reward -1 (Q = -2 at discount 0.5); the first's rows floored at -0.5."""
    first = torch.arange(n) % 2 == 0
    obs = torch.zeros(n, OBS)
    obs[:, 0] = torch.where(first, 1.0, -1.0)
    action = torch.rand(n, ACT, generator=torch.Generator().manual_seed(2)) * 2 - 1
    data = SimpleNamespace(obs=obs, action=action, reward=torch.full((n,), -1.0), next_obs=obs, terminal=torch.zeros(n))
    replay = Replay(OBS, ACT, n, seed=0)
    replay.add_transitions(data, floor=torch.where(first, -0.5, -np.inf).numpy())
    replay.mark_offline()
    return replay


@pytest.mark.parametrize("target_floor", ["none", "return"])
def test_target_floor_lifts_the_targets_of_floored_rows_only(target_floor: str) -> None:
    torch.manual_seed(0)
    replay = floored_replay()
    learner = build_learner(SMALL.replace(discount=0.5, target_floor=target_floor), toy_spec(), replay.offline_obs())
    for _ in range(800):
        stats = learner.update(replay.sample(SMALL.batch_size))
    probe = torch.zeros(2, OBS)
    probe[:, 0] = torch.tensor([1.0, -1.0])
    with torch.no_grad():
        floored, plain = learner.critic(probe, torch.zeros(2, ACT)).amin(0).tolist()
    assert plain == pytest.approx(-2.0, abs=0.3)  # the plain backup's value, floored or not
    if target_floor == "return":
        assert floored == pytest.approx(-0.5, abs=0.2)
        assert 0.4 < stats["floored"].item() < 0.6  # the floored state's rows, about half of every batch
    else:
        assert floored == pytest.approx(-2.0, abs=0.3) and "floored" not in stats


def test_target_floor_needs_a_discount_below_one() -> None:
    with pytest.raises(ConfigError, match="'target_floor' needs discount < 1"):
        TrainConfig(target_floor="return", discount=1.0)
    with pytest.raises(ConfigError, match="'target_floor' must be one of"):
        TrainConfig(target_floor="mc")


def chain_replay(lengths: list[int], rewards: np.ndarray, terminal_last: bool) -> Replay:
    """Episodes of these lengths whose obs column 0 counts the row (next_obs: the row after), one-step."""
    n = sum(lengths)
    obs = torch.zeros(n, OBS)
    obs[:, 0] = torch.arange(n, dtype=torch.float32)
    next_obs = obs.clone()
    next_obs[:, 0] += 1
    terminal = torch.zeros(n)
    if terminal_last:
        terminal[np.cumsum(lengths) - 1] = 1.0
    data = SimpleNamespace(
        obs=obs,
        action=torch.zeros(n, ACT),
        reward=torch.as_tensor(rewards, dtype=torch.float32),
        next_obs=next_obs,
        terminal=terminal,
    )
    replay = Replay(OBS, ACT, n, seed=0)
    replay.add_transitions(data)
    return replay


def test_look_ahead_sums_the_next_rewards_of_the_same_episode_and_bootstraps_where_they_end() -> None:
    rewards = np.array([-1.0, -1.0, 0.0, 0.0, -1.0, -1.0])
    replay = chain_replay([4, 2], rewards, terminal_last=True)
    replay.look_ahead(np.array([4, 2]), 3, 0.5)
    batch = replay.sample(4096)  # every row many times; check each against its hand-made n-step version
    row = batch.obs[:, 0].long()
    want_reward = torch.tensor([-1.5, -1.0, 0.0, 0.0, -1.5, -1.0])[row]
    want_next = torch.tensor([3.0, 4.0, 4.0, 4.0, 6.0, 6.0])[row]  # row t + k - 1's next obs
    want_steps = torch.tensor([3.0, 3.0, 2.0, 1.0, 2.0, 1.0])[row]
    want_terminal = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])[row]  # a look-ahead that reaches the end ends
    torch.testing.assert_close(batch.reward, want_reward)
    torch.testing.assert_close(batch.next_obs[:, 0], want_next)
    torch.testing.assert_close(batch.steps, want_steps)
    torch.testing.assert_close(batch.terminal, want_terminal)
    with pytest.raises(ValueError, match="already look ahead"):
        replay.look_ahead(np.array([4, 2]), 3, 0.5)  # summing sums would be wrong, so it is refused


def test_look_ahead_of_one_step_leaves_the_rows_as_they_were() -> None:
    replay = chain_replay([3], np.array([-1.0, -1.0, 0.0]), terminal_last=False)
    before = replay.data[: replay.size].clone()
    replay.look_ahead(np.array([3]), 1, 0.99)
    torch.testing.assert_close(replay.data[: replay.size], before)


@pytest.mark.parametrize("n_step", [1, 3])
def test_n_step_targets_bootstrap_at_gamma_to_the_steps_summed_with_the_offset_earned_per_step(n_step: int) -> None:
    cfg = SMALL.replace(n_step=n_step, reward_scale=2.0, reward_offset=0.5, discount=0.9)
    learner = build_learner(cfg, toy_spec(), torch.zeros(4, OBS))
    steps = torch.tensor([1.0, 2.0, 3.0, 3.0])
    batch = Batch(
        obs=torch.zeros(4, OBS),
        action=torch.zeros(4, ACT),
        reward=torch.tensor([-1.0, -1.9, -2.71, 0.0]),
        next_obs=torch.zeros(4, OBS),
        terminal=torch.tensor([0.0, 0.0, 0.0, 1.0]),
        steps=steps,
    )
    reward, bootstrap = learner._reward_and_bootstrap(batch)
    if n_step == 1:  # one-step rows as the paper has them; the steps column is not read
        torch.testing.assert_close(reward, batch.reward * 2.0 + 0.5)
        assert bootstrap == 0.9
    else:  # k steps: each earns 2 * r + 0.5, discounted, e.g. 2 * (-1 - 0.9) + 0.5 * (1 + 0.9) for k = 2
        torch.testing.assert_close(reward, torch.tensor([-1.5, -2.85, -4.065, 1.355]))
        torch.testing.assert_close(bootstrap, torch.tensor([0.9, 0.81, 0.729, 0.729]))


def test_n_step_must_be_at_least_one() -> None:
    with pytest.raises(ConfigError, match="'n_step' must be >= 1"):
        TrainConfig(n_step=0)


def loop_batch(reward: float, n: int = 64) -> Batch:
    """Rows of one state that loops on itself with this reward, from a replay whose rewards were -1 and 0."""
    return Batch(
        obs=torch.zeros(n, OBS),
        action=torch.zeros(n, ACT),
        reward=torch.full((n,), reward),
        next_obs=torch.zeros(n, OBS),
        terminal=torch.zeros(n),
        reward_range=torch.tensor([-1.0, 0.0]),
    )


@pytest.mark.parametrize("target_clip", ["none", "reward_range"])
@pytest.mark.parametrize(("reward", "next_q", "clipped_to"), [(0.0, 5.0, 0.0), (-1.0, -10.0, -2.0)])
def test_target_clip_holds_targets_inside_the_returns_the_rewards_can_reach(
    target_clip: str, reward: float, next_q: float, clipped_to: float
) -> None:
    # discount 0.5: rewards in [-1, 0] add up to returns in [-2, 0]; target critics that say 5 or -10 are outside it
    learner = build_learner(SMALL.replace(discount=0.5, target_clip=target_clip), toy_spec(), torch.zeros(4, OBS))
    with torch.no_grad():
        learner.target_critic.weights[-1].zero_()
        learner.target_critic.biases[-1].fill_(next_q)
    batch = loop_batch(reward)
    noise = (torch.zeros(64, ACT), torch.zeros(64, ACT))
    _, stats = learner.losses(batch, noise)
    if target_clip == "none":
        assert stats["target_mean"].item() == pytest.approx(reward + 0.5 * next_q)
        assert "clipped" not in stats
    else:
        assert stats["target_mean"].item() == pytest.approx(clipped_to)
        assert stats["clipped"].item() == 1.0
    inside = loop_batch(-1.0)
    with torch.no_grad():
        learner.target_critic.biases[-1].fill_(-1.5)  # -1 + 0.5 * -1.5 = -1.75: a return these rewards can give
    _, stats = learner.losses(inside, noise)
    assert stats["target_mean"].item() == pytest.approx(-1.75)


def test_target_clip_range_follows_reward_scale_and_offset() -> None:
    cfg = SMALL.replace(discount=0.9, target_clip="reward_range", reward_scale=2.0, reward_offset=3.0)
    learner = build_learner(cfg, toy_spec(), torch.zeros(4, OBS))
    low, high = learner._value_range(torch.tensor([-1.0, 0.0]))  # per step: 2 * r + 3 in [1, 3]
    assert (low.item(), high.item()) == pytest.approx((0.0, 30.0))  # 0: an episode may end at once


def test_replay_keeps_the_one_step_reward_range_through_look_ahead() -> None:
    replay = chain_replay([4, 2], np.array([-1.0, -1.0, 0.0, 0.0, -1.0, -1.0]), terminal_last=True)
    replay.look_ahead(np.array([4, 2]), 3, 0.5)  # rows now sum up to -1.5
    replay.add_step(np.zeros(OBS), np.zeros(ACT), -0.25, np.zeros(OBS), False)
    torch.testing.assert_close(replay.sample(8).reward_range, torch.tensor([-1.0, 0.0]))
    replay.add_step(np.zeros(OBS), np.zeros(ACT), 2.0, np.zeros(OBS), False)
    torch.testing.assert_close(replay.sample(8).reward_range, torch.tensor([-1.0, 2.0]))


def test_target_clip_is_checked() -> None:
    with pytest.raises(ConfigError, match="'target_clip' needs discount < 1"):
        TrainConfig(target_clip="reward_range", discount=1.0)
    with pytest.raises(ConfigError, match="'target_clip' must be one of"):
        TrainConfig(target_clip="feasible")


@pytest.mark.parametrize("value_action", ["sample", "mean"])
def test_value_at_the_policy_mean_gives_the_policys_own_actions_no_advantage(value_action: str) -> None:
    learner = build_learner(SMALL.replace(value_action=value_action), toy_spec(), torch.zeros(4, OBS))
    obs = torch.randn(64, OBS)
    with torch.no_grad():
        mean = learner.actor(obs)
    batch = Batch(obs=obs, action=mean, reward=torch.zeros(64), next_obs=obs, terminal=torch.zeros(64))
    noise = (torch.zeros(64, ACT), torch.ones(64, ACT))  # V's draw one std off the mean
    _, stats = learner.losses(batch, noise)
    if value_action == "mean":  # A = Q(s, mean) - Q(s, mean) = 0 on every row: plain BC weights
        assert stats["adv_std"].item() == 0.0
        assert stats["weight_ess"].item() == pytest.approx(64.0)
    else:  # the drawn action is off the mean, so the rows' advantages differ
        assert stats["adv_std"].item() > 0.0


def test_value_action_is_checked() -> None:
    with pytest.raises(ConfigError, match="'value_action' must be one of"):
        TrainConfig(value_action="mode")
