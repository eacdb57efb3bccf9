"""SRPO: the RSVR reward's grades, BGAE and GRPO advantages against hand-computed values, the dual-clip + KL loss
against a per-token loop, and the trainer (bookkeeping, resume, a planted task it learns)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.rec.srpo import (
    SrpoConfig,
    bgae_advantages,
    binary_reward,
    drop_uniform_groups,
    grpo_advantages,
    k3_kl,
    passk_bonus,
    rsvr_reward,
    srpo_policy_loss,
    train_srpo,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- reward
def test_rsvr_grades():
    t = ["a3", "b1", "c7"]
    assert rsvr_reward(["a3", "b1", "c7"], t, True) == 1.0
    assert rsvr_reward(["a3", "b1", "c7"], t, False) == 0.0  # format wrong
    assert rsvr_reward(None, t, True) == 0.0
    assert rsvr_reward(["a3", "b1", "c2"], t, True) == 0.707  # 2 levels
    assert rsvr_reward(["a3", "b2", "c7"], t, True) == 0.5  # 1 level: later matches do not count
    assert rsvr_reward(["a1", "b1", "c7"], t, True) == 0.0  # level 1 wrong
    assert rsvr_reward(["a3", "b1"], t, True) == 0.707  # a prefix of the target
    assert rsvr_reward(["a3", "b1", "c7", "d1"], t, True) == 0.866  # a dedup token the target lacks
    t5 = [1, 2, 3, 4, 2]  # four levels + a dedup rank
    assert rsvr_reward([1, 2, 3, 4, 1], t5, True) == 0.95
    assert rsvr_reward([1, 2, 3, 4], t5, True) == 0.95
    assert rsvr_reward(np.array([1, 2, 3, 4, 2]), t5, True) == 1.0
    assert rsvr_reward([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], True) == 0.95  # m >= 4 capped
    assert binary_reward([1, 2], [1, 2], True) == 1.0 and binary_reward([1, 3], [1, 2], True) == 0.0
    assert binary_reward([1, 2], [1, 2], False) == 0.0


# ----------------------------------------------------------------------------------------------- advantages
def test_grpo_advantages_by_hand():
    # [1, 0, 0, 0]: mean 0.25, unbiased std sqrt((0.75^2 + 3 0.25^2) / 3) = 0.5
    a = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64))
    assert torch.allclose(a[0], torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + 1e-6))
    assert torch.equal(a[1], torch.zeros(4, dtype=torch.float64))  # a uniform group: 0 / (0 + eps)
    with pytest.raises(PbrlError, match="n >= 2"):
        grpo_advantages(torch.zeros(3, 1))


def test_passk_bonus_by_hand():
    n, k = 10, 4
    # c = 1: rho = 1 - C(9,4)/C(10,4) = 1 - 126/210 = 0.4, sigma = sqrt(0.24);
    #   exact (0.6)/sigma, others (1 - 0.4 - C(8,3)/C(9,3) = 56/84)/sigma
    # c = 2: rho = 1 - 70/210 = 2/3, sigma = sqrt(2/9); exact (1/3)/sigma, others (1/3 - 35/84)/sigma
    # c = 0 and c = n: 0 from the arithmetic
    ex = torch.zeros(4, n, dtype=torch.bool)
    ex[0, 3] = True
    ex[1, :2] = True
    ex[3] = True
    b = passk_bonus(ex, k)
    s1, s2 = math.sqrt(0.24), math.sqrt(2 / 9)
    assert b[0, 3].item() == pytest.approx(0.6 / (s1 + 1e-6), rel=1e-9)
    assert b[0, 0].item() == pytest.approx((0.6 - 56 / 84) / (s1 + 1e-6), rel=1e-9)
    assert b[0, 3].item() == pytest.approx(1.2247424, abs=1e-6) and b[0, 0].item() == pytest.approx(-0.1360828,
                                                                                                     abs=1e-6)
    assert b[1, 0].item() == pytest.approx((1 / 3) / (s2 + 1e-6), rel=1e-9)
    assert b[1, 5].item() == pytest.approx((1 / 3 - 35 / 84) / (s2 + 1e-6), rel=1e-9)
    assert torch.equal(b[2], torch.zeros(n, dtype=torch.float64))  # c = 0
    assert torch.equal(b[3], torch.zeros(n, dtype=torch.float64))  # c = n
    # n = k = 4: C(n - c, 4) = 0 for every c >= 1, so rho = 1 and the bonus is 0 whatever c is
    b4 = passk_bonus(torch.tensor([[True, False, False, False], [True, True, True, False]]), 4)
    assert torch.equal(b4, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(PbrlError, match="k: expected"):
        passk_bonus(torch.zeros(1, 3, dtype=torch.bool), 4)


def test_bgae_is_the_z_score_of_graded_rewards_plus_the_exact_match_bonus():
    # one exact match and partial credit: the bonus counts only the exact match; the partial ones get the
    # negative bonus like every other rollout
    r = [1.0, 0.707, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    mean = sum(r) / 10
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 9)
    s1 = math.sqrt(0.24)
    bonus = [0.6 / (s1 + 1e-6)] + [(0.6 - 56 / 84) / (s1 + 1e-6)] * 9
    want = [(x - mean) / (std + 1e-6) + b for x, b in zip(r, bonus)]
    rewards = torch.tensor([r], dtype=torch.float64)
    got = bgae_advantages(rewards, rewards == 1.0, k=4)
    assert got[0].tolist() == pytest.approx(want, rel=1e-9)
    # [1, 0 x 9]: z = 0.9 / sqrt(0.1) and -0.1 / sqrt(0.1)
    got = bgae_advantages(torch.tensor([[1.0] + [0.0] * 9]), torch.tensor([[True] + [False] * 9]), 4)
    assert got[0, 0].item() == pytest.approx(0.9 / math.sqrt(0.1) + 1.2247424, abs=1e-4)
    assert got[0, 1].item() == pytest.approx(-0.1 / math.sqrt(0.1) - 0.1360828, abs=1e-4)
    # all exact: z 0 and bonus 0
    assert torch.equal(bgae_advantages(torch.ones(1, 10), torch.ones(1, 10, dtype=torch.bool)), torch.zeros(1, 10))


def test_drop_uniform_groups():
    m = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.707, 0.707, 1.0]])
    assert drop_uniform_groups(m).tolist() == [False, True, False, True]


# ----------------------------------------------------------------------------------------------- loss
def naive_loss(logp, old, ref, adv, mask, clip, dual, kl_coef):
    """The SRPO loss token by token in plain Python."""
    pg, kl, count = 0.0, 0.0, 0
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            a = float(adv[i])
            ratio = math.exp(max(-20.0, min(20.0, float(logp[i, t] - old[i, t]))))
            loss = max(-a * ratio, -a * min(max(ratio, 1 - clip[0]), 1 + clip[1]))
            if a < 0:
                loss = min(loss, -a * dual)
            r = max(-20.0, min(20.0, float(ref[i, t] - logp[i, t])))
            kl += max(-10.0, min(10.0, math.exp(r) - r - 1))
            pg += loss
            count += 1
    return pg / count + kl_coef * kl / count, pg / count, kl / count


def test_srpo_loss_equals_a_per_token_loop():
    g = torch.Generator().manual_seed(0)
    B, T = 6, 5
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.5
    old[0, 0] = logp[0, 0] - 3.0  # ratio e^3 > 10 on a negative advantage: the dual clip binds
    ref = logp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    adv = torch.tensor([-1.5, 0.8, -0.2, 2.0, 0.0, -0.7], dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    mask[4, 1:] = False
    for clip, dual, kl_coef in (((0.2, 0.2), 10.0, 0.001), ((0.2, 0.28), 3.0, 0.1)):
        loss, st = srpo_policy_loss(logp, old, ref, adv, mask, clip, dual, kl_coef)
        want, pg, kl = naive_loss(logp, old, ref, adv, mask, clip, dual, kl_coef)
        assert loss.item() == pytest.approx(want, rel=1e-12)
        assert st["pg_loss"].item() == pytest.approx(pg, rel=1e-12)
        assert st["kl"].item() == pytest.approx(kl, rel=1e-12)
        assert st["dual_clipfrac"].item() > 0
    # [B, T] advantages equal the same per-response advantages spread over the tokens
    loss2, _ = srpo_policy_loss(logp, old, ref, adv[:, None].expand(B, T), mask)
    assert loss2.item() == pytest.approx(srpo_policy_loss(logp, old, ref, adv, mask)[0].item(), rel=1e-12)


def test_srpo_loss_by_hand_and_its_gradient():
    # one token, A = -1, ratio e^3 = 20.09: PPO's max gives 20.09, the dual clip caps it at c = 10
    lp = torch.tensor([[0.0]], requires_grad=True)
    loss, st = srpo_policy_loss(lp, torch.tensor([[-3.0]]), torch.tensor([[0.0]]), torch.tensor([-1.0]),
                                torch.ones(1, 1, dtype=torch.bool))
    assert loss.item() == pytest.approx(10.0) and st["kl"].item() == 0.0
    loss.backward()
    assert lp.grad.item() == 0.0  # a capped token passes no policy gradient
    # A = +1, ratio 1: loss -1 and the gradient -1 (raise the token's log-prob), KL 0 at pi = pi_ref
    lp = torch.tensor([[-1.0]], requires_grad=True)
    loss, _ = srpo_policy_loss(lp, torch.tensor([[-1.0]]), torch.tensor([[-1.0]]), torch.tensor([1.0]),
                               torch.ones(1, 1, dtype=torch.bool))
    loss.backward()
    assert loss.item() == pytest.approx(-1.0) and lp.grad.item() == pytest.approx(-1.0)
    # k3 KL: exp(r) - r - 1 with r = ref - logp
    assert k3_kl(torch.tensor([0.0]), torch.tensor([-1.0])).item() == pytest.approx(math.exp(-1) + 1 - 1)


# ----------------------------------------------------------------------------------------------- trainer
def planted(tmp_path, users=4, seed=0, chat=False):
    """A tiny model folder, semantic IDs of 12 items (2 levels x 4 codes, one collision pair), prompts `u<i>`
    and a target item per prompt."""
    from pbrl.llm.models import TinyLMConfig, build_model
    from pbrl.llm.tokenizer import word_tokenizer
    from pbrl.rec.semantic_ids import SemanticIds, add_id_tokens

    every = list(itertools.product(range(1, 5), repeat=2))
    pick = np.random.default_rng(seed).choice(len(every), size=11, replace=False)
    codes = [list(every[i]) for i in pick] + [list(every[pick[0]])]
    dedup = [1] + [0] * 10 + [2]
    ids = SemanticIds(codes=np.array(codes), dedup=np.array(dedup), k=4)
    tok = word_tokenizer([" ".join(f"u{i}" for i in range(users))], chat=chat)
    add_id_tokens(tok, ids)
    model = build_model(TinyLMConfig(vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                                     num_kv_heads=1, intermediate_size=64), seed=seed)
    mdir = tmp_path / "sft"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    prompts = [tok(f"u{i}")["input_ids"] for i in range(users)]
    targets = [(3 * i + 1) % 12 for i in range(users)]
    return mdir, ids, tok, prompts, targets


def read_rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_one_step_bookkeeping_and_the_extra_reward(tmp_path):
    mdir, ids, tok, prompts, targets = planted(tmp_path)
    cfg = SrpoConfig(out=str(tmp_path / "run"), steps=1, prompts_per_step=4, minibatch_prompts=2, n=6, k=4,
                     progress=False, warmup_steps=0)
    calls = []

    def extra(p, item):
        calls.append((p, item))
        return 0.25

    s = train_srpo(cfg, mdir, prompts, targets, ids, tok, eos_token_id=tok.eos_token_id, extra_reward=extra)
    out = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "model/config.json"):
        assert (out / name).is_file(), name
    (row,) = read_rows(out)
    assert row["step"] == 1 and s["final"] == row
    assert row["srpo/valid_id"] == 1.0 and row["srpo/format_ok"] == 1.0  # trie rollouts
    # the extra reward is added to every valid rollout: reward = rsvr + 0.25
    assert row["srpo/reward"] == pytest.approx(row["srpo/rsvr"] + 0.25)
    assert len(calls) == row["srpo/sampled_groups"] * 6 and all(0 <= i < 12 for _, i in calls)
    assert 0 < row["srpo/kept_groups"] <= 4 and row["srpo/updates"] == math.ceil(row["srpo/kept_groups"] / 2)
    assert row["srpo/sampled_groups"] == 4 * row["srpo/gen_batches"]
    assert row["perf/generated_tokens"] > 0 and row["perf/tokens_per_s"] > 0
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["config"]["extra_reward"].endswith("extra") and cfg_json["config"]["max_new_tokens_resolved"] == 4
    # bad input: one line each
    with pytest.raises(PbrlError, match="targets\\[1\\]: item 12"):
        train_srpo(cfg, mdir, prompts, [0, 12, 0, 0], ids, tok)
    with pytest.raises(PbrlError, match="targets: expected one target item per prompt, got 2 for 4"):
        train_srpo(cfg, mdir, prompts, targets[:2], ids, tok)
    with pytest.raises(PbrlError, match="reward: 'none'"):
        train_srpo(SrpoConfig(out=str(tmp_path / "r2"), reward="none"), mdir, prompts, targets, ids, tok)
    with pytest.raises(PbrlError, match="k: expected <= n"):
        train_srpo(SrpoConfig(out=str(tmp_path / "r3"), n=3, k=4), mdir, prompts, targets, ids, tok)


def test_resume_reaches_the_uninterrupted_weights(tmp_path):
    mdir, ids, tok, prompts, targets = planted(tmp_path)
    common = dict(prompts_per_step=2, minibatch_prompts=1, n=4, k=2, progress=False, warmup_steps=2, lr=1e-3,
                  checkpoint_every=1, decoding="levels")
    train_srpo(SrpoConfig(out=str(tmp_path / "a"), steps=3, **common), mdir, prompts, targets, ids, tok,
               eos_token_id=tok.eos_token_id)
    train_srpo(SrpoConfig(out=str(tmp_path / "b"), steps=1, **common), mdir, prompts, targets, ids, tok,
               eos_token_id=tok.eos_token_id)
    train_srpo(SrpoConfig(out=str(tmp_path / "b"), steps=3, **common), mdir, prompts, targets, ids, tok,
               eos_token_id=tok.eos_token_id)
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["policy"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["policy"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["step"] for r in read_rows(tmp_path / "b")] == [1, 2, 3]
    def learning(rows):  # the rows without their timings
        return [{k: v for k, v in r.items() if not k.startswith("perf/") or k == "perf/generated_tokens"}
                for r in rows]

    assert learning(read_rows(tmp_path / "a")) == learning(read_rows(tmp_path / "b"))
    # a different advantage is another run: refused
    with pytest.raises(PbrlError, match="cannot resume, advantage differs"):
        train_srpo(SrpoConfig(out=str(tmp_path / "b"), steps=4, advantage="grpo", **common), mdir, prompts,
                   targets, ids, tok, eos_token_id=tok.eos_token_id)


@pytest.mark.parametrize("advantage,reward", [("bgae", "rsvr"), ("grpo", "binary")])
def test_srpo_learns_a_planted_task(tmp_path, advantage, reward):
    """4 prompts, each with a target item among 12: the mean RSVR reward of the rollouts rises from a random
    model's level. Measured (1 thread, seed 0, mean of the first / last 5 steps): bgae/rsvr 0.226 -> 0.845,
    grpo/binary 0.215 -> 0.905 over 40 steps, about 4 s each."""
    mdir, ids, tok, prompts, targets = planted(tmp_path)
    cfg = SrpoConfig(out=str(tmp_path / "run"), steps=40, prompts_per_step=4, minibatch_prompts=2, n=10, k=4,
                     lr=3e-3, warmup_steps=2, progress=False, advantage=advantage, reward=reward)
    s = train_srpo(cfg, mdir, prompts, targets, ids, tok, eos_token_id=tok.eos_token_id)
    rsvr = [r["srpo/rsvr"] for r in s["history"]]
    first, last = float(np.mean(rsvr[:5])), float(np.mean(rsvr[-5:]))
    assert last > first + 0.3, (first, last)
    assert last > 0.6


def test_rec_srpo_command_reads_sft_style_rows(tmp_path, capsys):
    from pbrl.rec.srpo import RecSrpo, read_targets

    mdir, ids, tok, _, targets = planted(tmp_path, chat=True)
    ids.save(tmp_path / "ids.json")
    rows = [{"messages": [{"role": "user", "content": f"u{i}"},
                          {"role": "assistant", "content": ids.item_text(t)}]} for i, t in enumerate(targets)]
    rows.append({"prompt": "u0", "item": 5})
    rows.append({"messages": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a text"}],
                 "task": "index2item", "item": 3})  # an alignment row of another task: skipped
    rows.append({"messages": [{"role": "user", "content": "u2"},
                              {"role": "assistant", "content": ids.item_text(7)}], "task": "seqrec", "item": 7})
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts, tg = read_targets(data, ids, tok)
    assert tg == targets + [5, 7]
    assert len(read_targets(data, ids, tok, tasks=None)[1]) == len(rows)
    assert prompts[0] == prompts[4]  # the answer turn is not part of the prompt
    assert tok.decode(prompts[0]).rstrip().endswith("assistant")
    RecSrpo(model=str(mdir), data=str(data), ids=str(tmp_path / "ids.json"), out=str(tmp_path / "run"), steps=1,
            prompts_per_step=2, minibatch_prompts=2, n=4, k=2, progress=False, threads=1).run()
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "u0"},
                                            {"role": "assistant", "content": "<|a_9|><|b_9|>"}]}) + "\n")
    with pytest.raises(PbrlError, match="bad.jsonl:1: no target"):
        read_targets(bad, ids, tok)
    bad.write_text(json.dumps({"prompt": "u0", "item": 99}) + "\n")
    with pytest.raises(PbrlError, match="bad.jsonl:1: field 'item'"):
        read_targets(bad, ids, tok)
    bad.write_text(json.dumps({"prompt": "u0", "item": 1, "task": "item2index"}) + "\n")
    with pytest.raises(PbrlError, match="no rows of task seqrec"):
        read_targets(bad, ids, tok)


def test_rec_srpo_refuses_a_foreign_out_folder_and_restarts_with_overwrite(tmp_path, capsys):
    import dataclasses

    from pbrl.cli import main
    from pbrl.llm.sft import SftConfig
    from pbrl.runs import RunFolder

    mdir, ids, tok, _, targets = planted(tmp_path)
    ids.save(tmp_path / "ids.json")
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"u{i}", "item": t}) + "\n" for i, t in enumerate(targets)))
    out = tmp_path / "run"
    args = ["rec", "srpo", str(mdir), str(data), "--ids", str(tmp_path / "ids.json"), "--out", str(out),
            "--steps", "1", "--prompts-per-step", "2", "--minibatch-prompts", "2", "--n", "4", "--k", "2",
            "--no-progress", "--threads", "1"]

    def refused(match):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pbrl: error:") and match in err[0], err

    # a folder of the user's own files: refused, nothing written beside them
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused("holds files that are not a `pbrl rec srpo` run (notes.txt)")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # an HF model folder (a config.json that is not a run's): refused
    (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
    refused("not a pbrl run's config")
    (out / "config.json").unlink()
    # another command's run (an SFT run folder): refused, whatever --resume says
    (out / "notes.txt").unlink()
    RunFolder(out, dataclasses.asdict(SftConfig(data="chat.jsonl")))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    refused("holds the run of another command, not of `pbrl rec srpo`")
    args.append("--no-resume")
    refused("holds the run of another command")
    args.pop()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # --overwrite writes the run there
    assert main([*args, "--overwrite"]) == 0
    assert [r["step"] for r in read_rows(out)] == [1]
    assert "n" in json.loads((out / "config.json").read_text())["config"]
    # the finished run: a plain rerun resumes it (no new step); other settings are refused; --overwrite restarts
    assert main(args) == 0 and [r["step"] for r in read_rows(out)] == [1]
    assert main([*args, "--lr", "0.001"]) == 2
    assert main([*args, "--lr", "0.001", "--steps", "2", "--overwrite"]) == 0
    assert [r["step"] for r in read_rows(out)] == [1, 2]
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 0.001
    (out / "notes.txt").write_text("mine")  # files a user adds to a run folder do not stop its resume
    assert main([*args, "--lr", "0.001", "--steps", "2"]) == 0
