"""baselines/lions_stages.py: its win rate (ties half), its ordering verdict and its argument checks (no training)."""

import pytest

from baselines.lions_stages import BUDGETS, main, report, win_rate
from pbrl.errors import PbrlError


def test_win_rate_counts_ties_half():
    # wins at 0 and 3, a tie at 1, a loss at 2: (1 + 0.5 + 0 + 1) / 4
    assert win_rate([1.0, 0.5, 0.0, 0.7], [0.5, 0.5, 0.2, 0.1]) == pytest.approx(0.625)
    assert win_rate([0.3, 0.4], [0.3, 0.4]) == 0.5


def _row(seed, sft, dpo, odpo):
    return {"seed": seed, "stages": {name: {"mean_score": v, "win_rate_vs_sft": 0.5, "scores": [v]}
                                     for name, v in zip(("SFT", "+DPO", "+ODPO"), (sft, dpo, odpo))}}


def test_report_says_plainly_whether_the_ordering_holds(capsys):
    report([_row(0, 0.1, 0.2, 0.3), _row(1, 0.1, 0.3, 0.2)], [0, 1])
    out = capsys.readouterr().out
    assert "does not hold** (0.100 / 0.250 / 0.250); strictly within 1 of 2 seeds" in out
    report([_row(0, 0.1, 0.2, 0.3)], [0, 1, 2])
    out = capsys.readouterr().out
    assert "Seeds [1, 2] did not finish" in out and ": holds** (0.100 / 0.200 / 0.300)" in out


def test_arguments_are_checked_before_any_work(tmp_path):
    with pytest.raises(PbrlError, match="--seeds: repeated"):
        main(["--seeds", "0", "0", "--work", str(tmp_path / "w"), "--out", "none"])
    with pytest.raises(SystemExit):
        main(["--budget", "huge"])
    assert not (tmp_path / "w").exists()
    assert set(BUDGETS) == {"tiny", "small"}


def _ablation_row(seed, sft, padded, t_pack, t_pad):
    names = ("SFT padded", "SFT loss on all", "+DPO 25%", "+DPO 50%", "+ODPO at the offline lr")
    row = _row(seed, sft, 0.5, 0.6)
    for st in row["stages"].values():
        st["mean_response_words"] = 3.0
    row["ablations"] = {n: {"mean_score": padded if n == "SFT padded" else 0.4, "mean_response_words": 2.0}
                        for n in names}
    sft_stage = lambda s: {"sft": {"seconds": s, "final": {"step": 300}}}  # noqa: E731
    row["chain"] = sft_stage(t_pack)
    row["ablation_runs"] = {n: sft_stage(t_pad) if n == "SFT padded" else {} for n in names}
    row["sft_step_seconds"] = {"packed": t_pack / 2, "padded": t_pad / 2}
    row["ran_now"] = {"chain": ["sft", "dpo", "odpo"], "sft_padded": ["sft"], "sft_loss_all": ["sft"],
                      "dpo_25": ["dpo"], "dpo_50": ["dpo"], "odpo_offline_lr": []}
    return row


def test_ablation_report_pairs_differences_per_seed_and_names_reused_stages(capsys):
    report([_ablation_row(0, 0.30, 0.32, 10.0, 15.0), _ablation_row(1, 0.40, 0.38, 10.0, 25.0)], [0, 1])
    out = capsys.readouterr().out
    # padded - packed per seed: +0.02 and -0.02 -> mean 0.000, std 0.028
    assert "| SFT padded | SFT with padded rows (packing off) | 0.350 ± 0.042 | SFT (0.350 ± 0.071) | " \
           "+0.000 ± 0.028 | 2.00 / 3.00 |" in out
    # wall time ratios 1.5 and 2.5
    assert "padded / packed = 2.00 ± 0.707 for the whole stage (per seed 15 s / 10 s, 25 s / 10 s)" in out
    assert "Stages reused from an earlier invocation (their seconds are from that run): " \
           "[(0, 'odpo_offline_lr'), (1, 'odpo_offline_lr')]" in out
