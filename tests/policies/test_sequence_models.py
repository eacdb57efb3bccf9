"""DT / QT / DTR internals against naive references: the window batch builder, the n-step targets, the training
path's attention, and the schedules that scale with the run's length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config

from pbrl.data import Episode, EpisodeDataset
from pbrl.policies.base import PolicySpec, load_policy, make_policy
from pbrl.policies.dt import Block, WindowBatch, WindowSampler, attention_bias, token_attention_mask
from pbrl.policies.dtr import nstep_window_targets


def _episodes(lengths=(2, 5, 3), obs_dim=2, discrete=False, reward=None, terminal=None) -> EpisodeDataset:
    """Episodes that end at a time limit, or where `terminal[e]` in a terminal state."""
    eps = []
    rng = np.random.default_rng(0)
    for e, T in enumerate(lengths):
        obs = rng.normal(size=(T + 1, obs_dim)).astype(np.float32) + 10 * e
        act = rng.integers(0, 3, size=T) if discrete else rng.uniform(-1, 1, size=(T, 1)).astype(np.float32)
        rew = rng.normal(size=T).astype(np.float32) if reward is None else np.full(T, reward, np.float32)
        end = np.eye(1, T, T - 1, dtype=bool)[0]
        done = bool(terminal and terminal[e])
        eps.append(Episode(obs, act, rew, end if done else np.zeros(T, bool), np.zeros(T, bool) if done else end))
    if discrete:
        import gymnasium as gym

        return EpisodeDataset.from_episodes(eps, action_space=gym.spaces.Discrete(3))
    return EpisodeDataset.from_episodes(eps)


@pytest.mark.parametrize("discrete", [False, True])
def test_window_batches_equal_a_naive_loop(discrete):
    ds = _episodes(discrete=discrete, terminal=(True, False, True))
    K, B, scale = 4, 64, 2.0
    policy = make_policy("dt", PolicySpec.from_dataset(ds), small_config("dt", context=K), 10)
    b = WindowSampler(policy, ds, context=K, batch_size=B, rtg_scale=scale, generator=torch.Generator().manual_seed(3))()
    starts = torch.randint(ds.num_transitions, (B,), generator=torch.Generator().manual_seed(3)).tolist()
    t = ds.transitions()
    n = ds.num_transitions
    obs = policy.normalize_obs(t.observations.reshape(n, -1).float())
    nxt = policy.normalize_obs(t.next_observations.reshape(n, -1).float())
    act = policy.normalize_actions(t.actions if discrete else t.actions.reshape(n, -1))
    ep_starts = [int(x) for x in ds.episode_starts]  # [E + 1], the last = n
    for i, s in enumerate(starts):
        e = max(j for j in range(len(ep_starts) - 1) if ep_starts[j] <= s)
        lo, hi = ep_starts[e], ep_starts[e + 1]
        length = min(hi - s, K)
        for k in range(K):
            if k < K - length:  # left padding: zeros and a False mask
                assert not b.mask[i, k]
                assert (b.states[i, k] == 0).all() and (b.next_states[i, k] == 0).all()
                assert (b.actions[i, k] == 0).all() and b.rewards[i, k] == 0 and b.rtg[i, k] == 0
                assert b.timesteps[i, k] == 0 and b.terminals[i, k] == 0
                continue
            j = s + k - (K - length)
            assert b.mask[i, k]
            assert torch.equal(b.states[i, k], obs[j]) and torch.equal(b.next_states[i, k], nxt[j])
            assert torch.equal(b.actions[i, k], act[j])
            assert b.rewards[i, k].item() == float(ds.rewards[j])
            rtg = sum(float(ds.rewards[x]) for x in range(j, hi)) / scale
            assert b.rtg[i, k].item() == pytest.approx(rtg, rel=1e-6, abs=1e-6)
            assert b.timesteps[i, k].item() == j - lo
            assert b.terminals[i, k].item() == (1.0 if j == hi - 1 and e != 1 else 0.0)  # episodes 0 and 2 fall


def test_nstep_targets_equal_a_naive_loop_for_each_gamma():
    # the discount matrix is cached per (K, gamma): two gammas and two lengths in turn each match the loop
    for K, g in [(6, 0.9), (6, 0.5), (3, 0.9), (6, 0.9)]:
        r, boot = torch.randn(5, K), torch.randn(5)
        naive = torch.zeros(5, K)
        for i in range(K):
            naive[:, i] = sum(g ** (j - i) * r[:, j] for j in range(i, K - 1)) + g ** (K - 1 - i) * boot
        torch.testing.assert_close(nstep_window_targets(r, boot, g), naive)


def test_nstep_targets_at_a_terminal_window_end_take_its_reward_not_the_bootstrap():
    # K = 3, gamma = 0.5, r = [1, 2, 3], bootstrap 4: window 0 ends at a time limit, window 1 in a terminal state
    r, boot = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), torch.tensor([4.0, 4.0])
    q = nstep_window_targets(r, boot, 0.5, torch.tensor([False, True]))
    assert q.tolist() == [[1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]]


@pytest.mark.parametrize("terminal_targets", [True, False])
def test_dtr_critic_loss_uses_terminal_targets(terminal_targets):
    # two whole episodes of 3 steps as the two windows: the first falls, the second times out; no dropout, so the
    # EMA actor's forward here equals the one inside the update
    ds = _episodes(lengths=(3, 3), terminal=(True, False))
    cfg = small_config("dtr", context=3, batch_size=2, dropout=0.0, terminal_targets=terminal_targets)
    policy = make_policy("dtr", PolicySpec.from_dataset(ds), cfg, 10)
    s = WindowSampler(policy, ds, context=3, batch_size=2, rtg_scale=1.0, generator=torch.Generator())
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])
    b = WindowBatch(states=s.obs[idx], actions=s.act[idx], rewards=s.rew[idx], rtg=s.rtg[idx],
                    next_states=s.next_obs[idx], timesteps=s.tstep[idx], mask=torch.ones(2, 3, dtype=torch.bool),
                    terminals=s.term[idx])
    assert b.terminals[:, -1].tolist() == [1.0, 0.0]
    with torch.no_grad():  # the critic loss by hand, from the networks before the update
        q = policy.critic(b.states, b.actions)  # [2, B, K]
        out, _ = policy.actor_ema(b.rtg, b.states, b.actions, b.timesteps, b.mask, "last_action")
        boot = policy._q(policy.critic_target, b.states[:, -1:], out).min(0).values[:, 0]  # [B]
    target = nstep_window_targets(b.rewards, boot, policy.config.gamma, torch.tensor([terminal_targets, False]))
    fit = torch.tensor([[True, True, terminal_targets], [True, True, False]])
    expected = sum(((q[k] - target) ** 2)[fit].mean() for k in range(2))
    assert policy.update(b)["dtr/critic_loss"] == pytest.approx(expected.item(), rel=1e-5)
    if terminal_targets:  # the fallen window's last target is its reward, not the bootstrap
        assert target[0, -1].item() == pytest.approx(b.rewards[0, -1].item()) != pytest.approx(boot[0].item())


def test_attention_bias_is_the_boolean_mask():
    m = torch.tensor([[False, True, True], [True, True, True]])
    bias, allowed = attention_bias(m), token_attention_mask(m)
    assert bias.shape == allowed.shape == (2, 1, 9, 9) and bias.dtype == torch.float32
    assert (bias[allowed] == 0).all() and torch.isneginf(bias[~allowed]).all()


def test_training_attention_equals_sdpa_without_dropout_draws():
    # the training path (explicit softmax, dropout on the weights) with every dropout made inactive gives the
    # values of the evaluation path (scaled_dot_product_attention), rows subset included
    torch.manual_seed(0)
    block = Block(16, 2, 32, "gelu", 0.1)
    x = torch.randn(3, 12, 16)
    m = torch.tensor([[False, True, True, True], [True] * 4, [False, False, True, True]])
    bias = attention_bias(m)
    for rows in (slice(None), slice(1, None, 3), torch.tensor([0, 4, 11])):
        want = block.eval()(x, bias, rows)
        block.train()
        for d in (block.attn_drop, block.resid_drop, block.mlp[3]):
            d.k = 0  # Dropout with k = 0 passes its input through
        got = block(x, bias, rows)
        for d in (block.attn_drop, block.resid_drop, block.mlp[3]):
            d.k = round(0.1 * 65536)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # with only the attention weights' dropout on, the output moves and stays finite
    want = block.eval()(x, bias)
    block.train()
    block.resid_drop.k = block.mlp[3].k = 0
    got = block(x, bias)
    assert torch.isfinite(got).all() and not torch.allclose(got, want)


# ------------------------------------------------------------------------------------------- run-length defaults
def test_short_runs_scale_the_warmup_and_ema_start(pendulum, capsys):
    spec = PolicySpec.from_dataset(pendulum)
    dt = make_policy("dt", spec, small_config("dt", warmup_steps=None), 1000)
    assert dt.config.warmup_steps == 100  # 10% of 1000 updates, not 10k
    assert "warmup_steps = 100" in capsys.readouterr().err
    make_policy("dt", spec, small_config("dt", warmup_steps=None), 1000)
    assert capsys.readouterr().err == ""  # said once per process
    assert make_policy("dt", spec, small_config("dt", warmup_steps=None), 500_000).config.warmup_steps == 10_000
    assert make_policy("dt", spec, small_config("dt", warmup_steps=None), 5).config.warmup_steps == 1
    assert make_policy("dt", spec, small_config("dt", warmup_steps=10_000), 1000).config.warmup_steps == 10_000
    for algo in ("dtr", "qt"):
        assert make_policy(algo, spec, small_config(algo, ema_start=None), 1000).config.ema_start == 100
        assert make_policy(algo, spec, small_config(algo, ema_start=None), 50_000).config.ema_start == 1000
        assert make_policy(algo, spec, small_config(algo, ema_start=7), 1000).config.ema_start == 7
    assert small_config("dt", warmup_steps=None).warmup_steps is None  # the caller's config is left as it was


def test_a_return_scale_that_squeezes_the_returns_to_go_is_reported_once(capsys):
    ds = _episodes(lengths=(4, 6), reward=1.0)  # returns-to-go 1..6
    policy = make_policy("dt", PolicySpec.from_dataset(ds), small_config("dt", context=3), 10)
    for _ in range(2):
        WindowSampler(policy, ds, context=3, batch_size=2, rtg_scale=1000.0, generator=torch.Generator())
    err = capsys.readouterr().err
    assert err.count("rtg_scale = 1000 keeps this dataset's returns-to-go within +-0.006") == 1
    WindowSampler(policy, ds, context=3, batch_size=2, rtg_scale=5.0, generator=torch.Generator())  # up to 1.2
    assert capsys.readouterr().err == ""


def test_scaled_warmup_drives_the_learning_rate_and_is_saved(pendulum, tmp_path):
    spec = PolicySpec.from_dataset(pendulum)
    policy = make_policy("dt", spec, small_config("dt", warmup_steps=None, lr=1e-3), 200)  # warm-up 20 updates
    sample = policy.make_sampler(pendulum, torch.Generator().manual_seed(0))
    lrs = []
    for _ in range(25):
        policy.update(sample())
        lrs.append(policy.optimizers["actor"].param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3 / 20) and lrs[9] == pytest.approx(1e-3 / 2) and lrs[19:] == [1e-3] * 6
    policy.save(tmp_path / "p.pt")
    loaded, _ = load_policy(tmp_path / "p.pt")
    assert loaded.config.warmup_steps == 20  # the checkpoint records the effective value


@pytest.mark.parametrize("data", ["pendulum", "cartpole"])
def test_dtr_first_critic_alone_equals_the_twin_pass(data, request):
    # the paper's policy term evaluates Q_1 only: same values and same gradient into the actor's output
    ds = request.getfixturevalue(data)
    torch.manual_seed(0)
    policy = make_policy("dtr", PolicySpec.from_dataset(ds), small_config("dtr"), 10)
    s = torch.randn(3, 5, policy.spec.obs_dim)
    out = torch.randn(3, 5, policy.spec.act_dim, requires_grad=True)
    q1 = policy._q(policy.critic, s, out, first_only=True)
    (g1,) = torch.autograd.grad(q1.sum(), out)
    q = policy._q(policy.critic, s, out)
    (g,) = torch.autograd.grad(q[0].sum(), out)
    assert q1.shape == (1, 3, 5) and q.shape == (2, 3, 5)
    torch.testing.assert_close(q1, q[:1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g1, g, rtol=1e-6, atol=1e-6)
