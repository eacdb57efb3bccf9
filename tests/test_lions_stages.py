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
