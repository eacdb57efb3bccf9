"""Hand-computed values for the algorithms' loss terms, the DT token layout and windows, DTR's n-step target and
candidate selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_config

from pbrl.data import Episode, EpisodeDataset
from pbrl.policies.base import PolicySpec, make_policy
from pbrl.policies.cql import cql_penalty
from pbrl.policies.dt import WindowSampler, interleave_tokens, token_attention_mask
from pbrl.policies.dtr import nstep_window_targets, policy_q_term, select_candidate
from pbrl.policies.iql import awr_weights, expectile_loss
from pbrl.policies.nets import Critic, Dropout, EnsembleMLP, Mish, TanhGaussianActor
from pbrl.policies.td3bc import td3bc_actor_loss, td3bc_lambda


def test_iql_expectile_loss():
    # u = [1, -2], tau = 0.7: (0.7 * 1 + 0.3 * 4) / 2
    assert expectile_loss(torch.tensor([1.0, -2.0]), 0.7).item() == pytest.approx(0.95)
    # tau = 0.5 is half the mean squared error
    u = torch.tensor([0.3, -1.1, 2.0])
    assert expectile_loss(u, 0.5).item() == pytest.approx(0.5 * (u**2).mean().item())
    assert awr_weights(torch.tensor([0.0, 1.0, 10.0]), 3.0, 100.0).tolist() == pytest.approx(
        [1.0, math.e**3, 100.0]
    )


def test_tanh_gaussian_log_prob_of_given_actions():
    """log_prob(s, a) of CQL's BC warm-up equals the log-density that sample() reports for the same action, and
    for a 1-D action the change of variables by hand: N(atanh a; mu, sigma) / (1 - a^2)."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, (8,)).double()
    obs = torch.randn(5, 3, dtype=torch.float64)
    a, logp = actor.sample(obs)
    assert torch.allclose(actor.log_prob(obs, a), logp, atol=1e-6)
    one = TanhGaussianActor(1, 1, (4,)).double()
    o, act = torch.tensor([[0.2]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)
    mean, std = one._dist(o)
    u = math.atanh(0.5)
    density = math.exp(-0.5 * ((u - mean.item()) / std.item()) ** 2) / (std.item() * math.sqrt(2 * math.pi))
    assert one.log_prob(o, act).item() == pytest.approx(math.log(density / (1 - 0.25)))


def test_cql_logsumexp_term():
    # one critic, two states: logsumexp([1, 1, 1]) - 1 = ln 3 ; logsumexp([0, ln 2]) - 0 = ln 3
    q_ood = torch.tensor([[1.0, 1.0, 1.0], [0.0, math.log(2.0), -math.inf]])
    q_data = torch.tensor([1.0, 0.0])
    assert cql_penalty(q_ood, q_data).item() == pytest.approx(math.log(3.0))
    # temperature T: T * log sum exp(q / T); two critics are summed
    q = torch.tensor([[2.0, 4.0]])
    expect = 2.0 * math.log(math.exp(1.0) + math.exp(2.0)) - 3.0
    assert cql_penalty(q, torch.tensor([3.0]), temperature=2.0).item() == pytest.approx(expect)
    assert cql_penalty(torch.stack([q, q]), torch.tensor([[3.0], [3.0]]), 2.0).item() == pytest.approx(
        2 * expect
    )


def test_td3bc_lambda_and_actor_loss():
    q = torch.tensor([1.0, -3.0], requires_grad=True)
    lam = td3bc_lambda(q, 2.5)
    assert lam.item() == pytest.approx(2.5 / 2.0) and not lam.requires_grad
    pi, a = torch.tensor([[0.5], [0.0]]), torch.tensor([[0.0], [1.0]])
    # -1.25 * mean(q) + mean((pi - a)^2) = -1.25 * -1 + (0.25 + 1) / 2
    assert td3bc_actor_loss(q, pi, a, 2.5).item() == pytest.approx(1.25 + 0.625)


def test_ensemble_mlp_equals_members():
    torch.manual_seed(0)
    net = EnsembleMLP(3, 4, 2, hidden=(8, 8))
    x = torch.randn(5, 4)
    out = net(x)  # [3, 5, 2]
    for k in range(3):
        h = x
        for layer in net.hidden:
            h = torch.relu(h @ layer.weight[k] + layer.bias[k])
        torch.testing.assert_close(out[k], h @ net.out.weight[k] + net.out.bias[k])
    critic = Critic(4, 3, discrete=True, n=2, hidden=(8,))
    q_all = critic.all_actions(x)  # [2, 5, 3]
    act = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(critic(x, act), q_all[:, torch.arange(5), act])


def test_ensemble_mlp_gradients_equal_members():
    # out-of-place activations: the batched backward gives each member's own gradients
    torch.manual_seed(0)
    net = EnsembleMLP(2, 4, 1, hidden=(8, 8), act="mish")
    x = torch.randn(6, 4)
    net(x).square().sum().backward()
    for k in range(2):
        w = [(layer.weight[k].detach().clone().requires_grad_(), layer.bias[k].detach().clone()) for layer in net.hidden]
        wo = net.out.weight[k].detach().clone().requires_grad_()
        h = x
        for weight, bias in w:
            h = F.mish(h @ weight + bias)
        (h @ wo + net.out.bias[k].detach()).square().sum().backward()
        torch.testing.assert_close(net.hidden[0].weight.grad[k], w[0][0].grad)
        torch.testing.assert_close(net.out.weight.grad[k], wo.grad)


def test_cpu_mish_equals_torch_mish_values_and_gradients():
    # the one-exp form against torch's float64 kernel, over the range where each branch of the formula matters:
    # e^x underflow (x << 0), the clamp at 20, and the ordinary middle
    x64 = torch.cat([torch.linspace(-120.0, 60.0, 20001, dtype=torch.float64), torch.tensor([0.0, 19.99, 20.0, 20.01])])
    x = x64.float().requires_grad_()
    ref = x64.clone().requires_grad_()
    y = Mish()(x)
    torch.testing.assert_close(y.double(), F.mish(ref), rtol=2e-6, atol=1e-6)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y.backward(g.float())
    F.mish(ref).backward(g)
    torch.testing.assert_close(x.grad.double(), ref.grad, rtol=2e-6, atol=1e-6)
    with torch.no_grad():  # no gradient: the slope is not stored, the value is the same
        torch.testing.assert_close(Mish()(x.detach()), y.detach(), rtol=0, atol=0)
    assert Mish()(torch.tensor([1.0], dtype=torch.bfloat16)).dtype == torch.bfloat16  # other dtypes: torch's kernel


def test_cpu_dropout_keeps_the_expected_fraction_unbiased():
    torch.manual_seed(0)
    drop = Dropout(0.1)
    x = torch.ones(400, 1000, requires_grad=True)
    y = drop(x)
    keep = y != 0
    k = round(0.1 * 65536)
    assert abs(keep.float().mean().item() - (1 - k / 65536)) < 3e-3  # 400k draws: std 5e-4
    torch.testing.assert_close(y[keep], torch.full_like(y[keep], 65536 / (65536 - k)))  # kept values rescaled
    assert abs(y.mean().item() - 1.0) < 5e-3  # unbiased
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient = mask x scale
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_dt_token_layout_and_mask():
    B, K, E = 1, 3, 2
    r = torch.full((B, K, E), 0.0) + torch.arange(K).view(1, K, 1) * 10
    s, a = r + 1, r + 2
    tokens = interleave_tokens(r, s, a)[0, :, 0].tolist()
    assert tokens == [0, 1, 2, 10, 11, 12, 20, 21, 22]  # R_0 s_0 a_0 R_1 s_1 a_1 ...
    mask = token_attention_mask(torch.tensor([[False, True, True]]))[0, 0]  # first step is padding
    assert mask.shape == (9, 9)
    assert mask[4, 3] and mask[4, 4] and not mask[4, 5]  # s_1 sees R_1 and itself, not a_1
    assert not mask[4, :3].any()  # nor the padded step
    assert mask[8, 3:].all() and mask[0, 0] and not mask[0, 1]


def test_dt_action_at_state_token_is_causal(pendulum):
    torch.manual_seed(0)
    policy = make_policy(
        "dt", PolicySpec.from_dataset(pendulum), small_config("dt", dropout=0.0, bf16="off"), 10
    ).eval()
    K, D = 5, 3
    rtg, s, a = torch.randn(2, K), torch.randn(2, K, D), torch.randn(2, K, 1)
    t, m = torch.arange(K).expand(2, K), torch.ones(2, K, dtype=torch.bool)
    pred, _ = policy.model(rtg, s, a, t, m)
    a2 = a.clone()
    a2[:, 2:] = 5.0  # future and current actions do not move the prediction of a_2
    s2 = s.clone()
    s2[:, 2] += 1.0  # the current state does
    torch.testing.assert_close(policy.model(rtg, s, a2, t, m)[0][:, :3], pred[:, :3])
    assert not torch.allclose(policy.model(rtg, s2, a, t, m)[0][:, 2], pred[:, 2])


def test_dt_partial_outputs_equal_the_full_forward(pendulum, monkeypatch):
    # the last block computing only the rows the heads read gives the full forward's values
    from pbrl.policies.dt import Block

    torch.manual_seed(0)
    policy = make_policy(
        "dtr", PolicySpec.from_dataset(pendulum), small_config("dtr", dropout=0.0, bf16="off", n_layers=2), 10
    ).eval()
    K, D = 5, 3
    rtg, s, a = torch.randn(2, K), torch.randn(2, K, D), torch.randn(2, K, 1)
    t, m = torch.arange(K).expand(2, K), torch.tensor([[False, False, True, True, True], [True] * 5])
    both_a, both_s = policy.actor(rtg, s, a, t, m)
    only_a, none = policy.actor(rtg, s, a, t, m, "actions")
    last_a, _ = policy.actor(rtg, s, a, t, m, "last_action")
    full = Block.forward
    # reference: every block computes all rows, the selection happens afterwards
    monkeypatch.setattr(Block, "forward", lambda self, x, mask, rows=slice(None): full(self, x, mask)[:, rows])
    ref_a, ref_s = policy.actor(rtg, s, a, t, m)
    assert none is None and only_a.shape == ref_a.shape and last_a.shape == (2, 1, 1)
    for got, want in [(both_a, ref_a), (both_s, ref_s), (only_a, ref_a), (last_a, ref_a[:, -1:])]:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def _toy_dataset(lengths=(3, 6), obs_dim=2):
    eps = []
    for e, T in enumerate(lengths):
        obs = np.arange((T + 1) * obs_dim, dtype=np.float32).reshape(T + 1, obs_dim) + 100 * e
        eps.append(
            Episode(
                obs,
                np.zeros((T, 1), np.float32),
                np.arange(1, T + 1, dtype=np.float32) + 10 * e,
                np.zeros(T, bool),
                np.eye(1, T, T - 1, dtype=bool)[0],
            )
        )
    return EpisodeDataset.from_episodes(eps)


def test_windows_stay_inside_episodes_and_rtg_matches_naive():
    ds = _toy_dataset()
    policy = make_policy("dt", PolicySpec.from_dataset(ds), small_config("dt", context=4), 10)
    sampler = WindowSampler(policy, ds, context=4, batch_size=256, rtg_scale=2.0, generator=torch.Generator())
    b = sampler()
    raw = b.states * policy.obs_std + policy.obs_mean  # [B, K, D] back to raw observations
    for i in range(256):
        m = b.mask[i]
        assert m[-1] and m.to(torch.int8).diff().ge(0).all()  # left padding only
        ep = int(raw[i, -1, 0].item() // 100)  # observations encode their episode
        assert torch.all(raw[i, m, 0] // 100 == ep)
        start = int(ds.episode_starts[ep])
        t = b.timesteps[i, m]
        assert torch.equal(t, torch.arange(int(t[0]), int(t[0]) + int(m.sum())))
        rew = ds.episode(ep).rewards
        for k, tt in zip(torch.nonzero(m).flatten().tolist(), t.tolist()):
            assert b.rewards[i, k].item() == rew[tt]
            assert b.rtg[i, k].item() == pytest.approx(rew[tt:].sum() / 2.0)
            assert ds.rewards[start + tt] == rew[tt]
        assert (b.rewards[i, ~m] == 0).all() and (b.rtg[i, ~m] == 0).all()


def test_dtr_nstep_in_window_target():
    # K = 3, gamma = 0.5, r = [1, 2, 3], bootstrap 4 at the last step t = 2 (its reward r_2 is not used)
    q = nstep_window_targets(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0]), 0.5)
    assert q.tolist() == [[1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0]]
    # left padding (zero rewards) in front of a two-step window leaves the real targets unchanged
    q = nstep_window_targets(torch.tensor([[0.0, 2.0, 3.0]]), torch.tensor([4.0]), 0.5)
    assert q[0, 1:].tolist() == [4.0, 4.0]
    # against a naive loop
    r, boot, g = torch.randn(4, 6), torch.randn(4), 0.9
    naive = torch.zeros(4, 6)
    for i in range(6):
        naive[:, i] = sum(g ** (j - i) * r[:, j] for j in range(i, 5)) + g ** (5 - i) * boot
    torch.testing.assert_close(nstep_window_targets(r, boot, g), naive)


def test_dtr_q_term_normalization():
    q1 = torch.tensor([[2.0, -4.0, 100.0]])
    q2 = torch.tensor([[1.0, 1.0, 100.0]])
    m = torch.tensor([[True, True, False]])
    # -eta * mean(q1) / mean|q2| over valid positions = -3 * (-1) / 1
    assert policy_q_term(q1, q2, m, 3.0).item() == pytest.approx(3.0)
    assert policy_q_term(q1, q1, m, 3.0).item() == pytest.approx(-3.0 * -1.0 / 3.0)


def test_dtr_eta_schedules(pendulum):
    spec = PolicySpec.from_dataset(pendulum)
    dtr = make_policy("dtr", spec, small_config("dtr", eta_max=2.0), total_steps=100)
    qt = make_policy("qt", spec, small_config("qt", eta_max=2.0), total_steps=100)
    dtr.step = qt.step = 25
    assert dtr.eta() == pytest.approx(0.5) and qt.eta() == 2.0


def test_select_candidate():
    q = torch.tensor([[0.1, 3.0, -1.0], [5.0, 4.0, 4.9]])
    assert select_candidate(q, sample=False).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([select_candidate(q, True, g) for _ in range(2000)])  # [2000, 2]
    freq = (picks[:, 0] == 1).float().mean().item()
    p = torch.softmax(q[0], 0)[1].item()
    assert abs(freq - p) < 0.03


class _QIsFirstAction(torch.nn.Module):
    """A critic whose Q is (a large multiple of) the action's first coordinate (twin copies)."""

    def forward(self, obs, act):
        return torch.stack([act[..., 0], act[..., 0] + 1.0]) * 1e4


@pytest.mark.parametrize("inference", ["paper", "release"])
def test_dtr_picks_highest_q_candidate(pendulum, inference):
    torch.manual_seed(0)
    spec = PolicySpec.from_dataset(pendulum)
    # release: no RTG noise, so the 50 candidates are 10 copies of the 5 targets' actions, and Q is so steep that
    # softmax sampling is argmax
    policy = make_policy("dtr", spec, small_config("dtr", inference=inference, release_rtg_noise=0.0), 10)
    for _ in range(3):  # a little training so candidates differ
        policy.update(policy.make_sampler(pendulum, torch.Generator().manual_seed(0))())
    policy.critic = policy.critic_target = _QIsFirstAction()
    policy.eval()
    obs = torch.tensor(pendulum.observations[:4])
    policy.reset(4)
    with torch.no_grad():
        chosen = policy._act(policy.normalize_obs(obs))  # [4, 1]
        # the candidates by hand: same context, each return target
        ctx = policy.context
        r0 = policy.candidate_returns()
        cands = []
        for c in range(len(r0)):
            rtg = (
                r0[c] * (1 - ctx.timesteps.float() / spec.max_episode_length) / policy.config.rtg_scale
            ) * ctx.mask
            out, _ = policy.actor(rtg, ctx.states, torch.zeros_like(ctx.actions), ctx.timesteps, ctx.mask)
            cands.append(out[:, -1, 0])
        cands = torch.stack(cands, 1)  # [4, C]
    assert len(r0) == (5 if inference == "paper" else 50)
    assert (cands.max(1).values - cands.min(1).values).min() > 1e-4  # the choice matters
    torch.testing.assert_close(chosen[:, 0], cands.max(1).values)


def test_transformer_bf16_autocast_matches_float32(pendulum):
    torch.manual_seed(0)
    spec = PolicySpec.from_dataset(pendulum)
    model = make_policy("dt", spec, small_config("dt", dropout=0.0, bf16="off"), 10).model.eval()
    rtg, s, a = torch.randn(2, 5), torch.randn(2, 5, 3), torch.randn(2, 5, 1)
    t, m = torch.arange(5).expand(2, 5), torch.ones(2, 5, dtype=torch.bool)
    ref, _ = model(rtg, s, a, t, m)
    torch.manual_seed(0)
    model = make_policy("dt", spec, small_config("dt", dropout=0.0, bf16="on"), 10).model.eval()  # same weights
    assert model.bf16_device_types == {"cpu", "cuda"}
    out, _ = model(rtg, s, a, t, m)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)  # it did run in bf16
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)


def _heap_in_use() -> int | None:
    from pbrl.utils import heap_in_use_bytes

    return heap_in_use_bytes()


@pytest.mark.parametrize("ema_bf16", ["off", "on"])
def test_dtr_ema_copy_keeps_no_autograd_history(pendulum, ema_bf16):
    # before `ema_start` the EMA actor copies the actor each update; recorded by autograd, that copy turned the EMA
    # weights into non-leaves with a graph one node longer per update, never freed (the ema_bf16 leak)
    torch.manual_seed(0)
    cfg = small_config("dtr", ema_start=10_000, ema_bf16=ema_bf16)
    policy = make_policy("dtr", PolicySpec.from_dataset(pendulum), cfg, 10_000)
    sample = policy.make_sampler(pendulum, torch.Generator().manual_seed(0))
    for _ in range(3):
        policy.update(sample())
    for name, p in policy.actor_ema.named_parameters():
        assert p.is_leaf and not p.requires_grad and p.grad_fn is None, name
    torch.testing.assert_close(  # still an exact copy
        torch.cat([p.flatten() for p in policy.actor_ema.parameters()]),
        torch.cat([p.flatten() for p in policy.actor.parameters()]),
        rtol=0,
        atol=0,
    )
    # and the live heap stops growing once warm: 150 more updates of the leaking code held 4.6 MB more here
    # (about 1.5 KB per EMA parameter tensor per update); the fixed code holds the same bytes after them
    before = _heap_in_use()
    if before is None:
        pytest.skip("needs glibc's mallinfo2")
    for _ in range(150):
        policy.update(sample())
    grown = _heap_in_use() - before
    assert grown < 1_000_000, f"heap in use grew {grown / 1e6:.1f} MB over 150 updates"


@pytest.mark.parametrize("amx", [False, True])
def test_bf16_settings_resolve_once_with_the_shared_resolver(pendulum, monkeypatch, amx):
    # the trained transformer's auto means CUDA only; the EMA actor's ema_bf16 auto means CUDA or an AMX CPU
    import pbrl.utils

    monkeypatch.setattr(pbrl.utils, "cpu_has_amx_bf16", lambda: amx)
    spec = PolicySpec.from_dataset(pendulum)
    for algo in ("dt", "dtr"):
        policy = make_policy(algo, spec, small_config(algo), 10)
        actor = policy.model if algo == "dt" else policy.actor
        assert actor.bf16_device_types == {"cuda"}
        for setting, want in [("on", {"cpu", "cuda"}), ("off", set())]:
            actor = make_policy(algo, spec, small_config(algo, bf16=setting), 10)
            assert (actor.model if algo == "dt" else actor.actor).bf16_device_types == want
    for setting, want in [("auto", {"cuda", "cpu"} if amx else {"cuda"}), ("on", {"cpu", "cuda"}), ("off", set())]:
        policy = make_policy("dtr", spec, small_config("dtr", ema_bf16=setting), 10)
        assert policy.actor_ema.bf16_device_types == want
        assert policy.actor.bf16_device_types == {"cuda"}  # the actor keeps its own setting


def test_dt_and_dtr_share_one_transformer_config_with_flat_fields():
    import dataclasses
    import json

    from pbrl.policies.base import default_config
    from pbrl.policies.dt import DTConfig, TransformerConfig
    from pbrl.policies.dtr import DTRConfig

    names = [f.name for f in dataclasses.fields(TransformerConfig)]
    assert len(names) == 10 and names[0] == "normalize_obs"  # ObservationConfig's field, then the transformer's
    for cls in (DTConfig, DTRConfig):
        assert issubclass(cls, TransformerConfig) and cls.__bases__ == (TransformerConfig,)
        assert [f.name for f in dataclasses.fields(cls)][:10] == names
    # each keeps its own documented defaults
    dt, dtr = DTConfig(), DTRConfig()
    assert (dt.embed_dim, dt.n_layers, dt.n_heads, dt.n_inner, dt.activation) == (128, 3, 1, None, "gelu")
    assert (dtr.embed_dim, dtr.n_layers, dtr.n_heads, dtr.n_inner, dtr.activation) == (256, 4, 4, 1024, "relu")
    assert (dt.batch_size, dtr.batch_size, dt.context, dtr.context) == (64, 256, 20, 20)
    # command-line style flat overrides, and a checkpoint's flat config JSON written before the shared config
    cfg = default_config("dtr", embed_dim=64, n_layers=2, batch_size=64)
    assert (cfg.embed_dim, cfg.n_layers, cfg.n_heads, cfg.batch_size) == (64, 2, 4, 64)
    old = {"batch_size": 256, "context": 20, "embed_dim": 96, "n_layers": 2, "n_heads": 4, "n_inner": 1024,
           "activation": "relu", "dropout": 0.1, "max_ep_len": 1000, "lr": 3e-4, "bf16": "auto", "ema_bf16": "off"}
    loaded = DTRConfig(**json.loads(json.dumps(old)))
    assert dataclasses.asdict(loaded) == {**dataclasses.asdict(DTRConfig()), **old}


def test_iql_reward_scale_multiplies_rewards_by_1000_over_the_return_range(pendulum):
    from pbrl.errors import PbrlError
    from pbrl.policies.iql import return_range_scale

    assert return_range_scale(np.array([-3.0, 1.0, 5.0])) == 1000.0 / 8.0  # by hand: max - min = 8
    with pytest.raises(PbrlError, match="same return"):
        return_range_scale(np.array([2.0, 2.0]))
    spec = PolicySpec.from_dataset(pendulum)
    returns = pendulum.episode_returns()
    factor = 1000.0 / (returns.max() - returns.min())
    rewards = {}
    for scale in (False, True):
        pol = make_policy("iql", spec, small_config("iql", reward_scale=scale), total_steps=10)
        rewards[scale] = pol.make_sampler(pendulum, torch.Generator().manual_seed(0)).data.rewards
    torch.testing.assert_close(rewards[False], torch.as_tensor(pendulum.rewards, dtype=rewards[False].dtype))
    torch.testing.assert_close(rewards[True], rewards[False] * factor)


def test_iql_reward_scale_is_skipped_when_every_return_is_equal(pendulum, capsys):
    rewards = np.zeros(pendulum.num_transitions, dtype=np.float32)
    rewards[pendulum.episode_starts[:-1]] = 1.0  # every episode returns 1: max - min = 0
    flat = pendulum.with_rewards(rewards)
    pol = make_policy("iql", PolicySpec.from_dataset(flat), small_config("iql", reward_scale=True), total_steps=10)
    got = pol.make_sampler(flat, torch.Generator().manual_seed(0)).data.rewards
    torch.testing.assert_close(got, torch.as_tensor(rewards, dtype=got.dtype))  # left unscaled
    assert "reward_scale skipped" in capsys.readouterr().err


def test_iql_without_observation_normalization_trains_and_acts_on_raw_observations(pendulum):
    spec = PolicySpec.from_dataset(pendulum)
    raw = torch.as_tensor(pendulum.transitions("cpu").observations, dtype=torch.float32).reshape(
        pendulum.num_transitions, -1)
    batches = {}
    for norm in (True, False):
        pol = make_policy("iql", spec, small_config("iql", normalize_obs=norm), total_steps=10)
        batches[norm] = pol.make_sampler(pendulum, torch.Generator().manual_seed(0)).data.observations
    torch.testing.assert_close(batches[False], raw)  # identity coordinates
    mean, std = torch.tensor(spec.obs_mean), torch.tensor(spec.obs_std)
    torch.testing.assert_close(batches[True], (raw - mean) / std)
    # acting reads the same raw coordinates: act(x) is the actor's mode at x itself
    x = raw[:4].numpy()
    with torch.no_grad():
        expected = pol.unnormalize_actions(pol.actor.mode(raw[:4])).numpy()
    np.testing.assert_allclose(pol.act(x), expected, rtol=1e-6)


@pytest.mark.parametrize("algo", ["bc", "td3bc", "cql", "dt", "qt", "dtr"])
def test_every_algorithm_can_train_and_act_on_raw_observations(pendulum, algo, tmp_path):
    from pbrl.policies.base import load_policy

    spec = PolicySpec.from_dataset(pendulum)
    raw = torch.as_tensor(pendulum.transitions("cpu").observations, dtype=torch.float32).reshape(
        pendulum.num_transitions, -1)
    mean, std = torch.tensor(spec.obs_mean), torch.tensor(spec.obs_std)
    for norm in (True, False):
        torch.manual_seed(0)
        pol = make_policy(algo, spec, small_config(algo, normalize_obs=norm), total_steps=10)
        want = (raw - mean) / std if norm else raw
        torch.testing.assert_close(pol.normalize_obs(raw), want)
        sample = pol.make_sampler(pendulum, torch.Generator().manual_seed(0))
        batch = sample()
        got = batch.states[batch.mask] if algo in ("dt", "qt", "dtr") else batch.observations
        assert any(torch.equal(got[0], row) for row in want)  # the sampler reads the same coordinates
        pol.update(batch)
        pol.save(tmp_path / f"{algo}-{norm}.pt")
        loaded, _ = load_policy(tmp_path / f"{algo}-{norm}.pt")
        assert loaded.config.normalize_obs is norm
        torch.testing.assert_close(loaded.normalize_obs(raw), want)


@pytest.mark.parametrize("after", [False, True])
def test_iql_actor_weights_read_the_value_function_before_or_after_its_step(pendulum, after):
    import copy

    spec = PolicySpec.from_dataset(pendulum)
    pol = make_policy("iql", spec, small_config("iql", actor_after_critic=after, actor_cosine=False), total_steps=10)
    batch = pol.make_sampler(pendulum, torch.Generator().manual_seed(0))()
    ref = copy.deepcopy(pol)
    pol.update(batch)
    # naive reference: the value and critic step on their losses, then the actor on weights from V before or after
    obs, act = batch.observations, batch.actions
    with torch.no_grad():
        target_q = ref.critic_target(obs, act).min(0).values
        q_target = batch.rewards + ref.config.gamma * (1 - batch.terminals) * ref.value(batch.next_observations)[:, 0]
        v_before = ref.value(obs)[:, 0]
    v_loss = expectile_loss(target_q - ref.value(obs)[:, 0], ref.config.expectile)
    q = ref.critic(obs, act)
    for opt in (ref.optimizers["value"], ref.optimizers["critic"]):
        opt.zero_grad()
    (v_loss + F.mse_loss(q, q_target.expand_as(q))).backward()
    ref.optimizers["value"].step()
    ref.optimizers["critic"].step()
    with torch.no_grad():
        v = ref.value(obs)[:, 0] if after else v_before
    w = awr_weights(target_q - v, ref.config.beta, ref.config.max_weight)
    ref.optimizers["actor"].zero_grad()
    (w * -ref.actor.log_prob(obs, act)).mean().backward()
    ref.optimizers["actor"].step()
    for name, p in pol.actor.state_dict().items():
        torch.testing.assert_close(p, ref.actor.state_dict()[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pol.value.state_dict(), ref.value.state_dict())


def test_cpu_mish_under_vmap_equals_the_unbatched_gradient():
    # seed-batched training evaluates every loss under torch.func.vmap
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    grads = torch.func.vmap(torch.func.grad(lambda v: Mish()(v).square().sum()))(x)
    torch.testing.assert_close(grads, torch.func.grad(lambda v: F.mish(v).square().sum())(x), rtol=2e-6, atol=1e-6)
