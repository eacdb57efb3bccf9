"""baselines/dt_rtg_probe.py: the rescaled DT column differs from Table 1's only by its return scale, and the two
columns it borrows are Table 1's runs (so the sweep reuses their records instead of training them again)."""

from __future__ import annotations

import json

from baselines.dt_rtg_probe import PROBE_SCALE, probe_columns
from baselines.dtr_table1 import columns
from pbrl.policies.dt import DTConfig
from pbrl.sweep import Grid, expand, reuse_records

BASE = {"steps": 100, "eval_every": 50, "eval_episodes": 2, "queries": 20, "length": 10}


def grid(name: str, cols: list[dict]) -> Grid:
    return Grid(name=name, runner="pbrl.pipeline:run_record", budget="plateau", base=BASE,
                axes={"dataset": ["pbrl/hopper/medium-replay-v0"], "seed": [0, 1]}, columns=cols, meta={})


def test_the_rescaled_column_changes_only_rtg_scale():
    dt, rescaled, qt = probe_columns()
    assert DTConfig().rtg_scale == 1000.0 and PROBE_SCALE == 10.0
    assert {k: v for k, v in rescaled.items() if k not in ("name", "policy")} == \
        {k: v for k, v in dt.items() if k not in ("name", "policy")}
    assert rescaled["policy"] == {**dt["policy"], "rtg_scale": 10.0} and "rtg_scale" not in dt["policy"]
    assert (dt["name"], rescaled["name"], qt["name"]) == ("Pb-DT-minmax", "Pb-DT-minmax-rtg10", "Pb-QT-minmax")


def test_the_borrowed_columns_are_reused_from_table_1_records(tmp_path):
    table1 = grid("dtr_table1-plateau", columns("plateau"))
    src = tmp_path / "table1" / "records"
    src.mkdir(parents=True)
    (tmp_path / "table1" / "grid.json").write_text(json.dumps({"runner": table1.runner}))
    for spec in expand(table1):
        rec = {"run_id": spec.run_id, "column": spec.column, "config": spec.config, "status": "ok", "sweep": table1.name}
        (src / f"{spec.run_id}.json").write_text(json.dumps(rec))
    probe = grid("dt_rtg-plateau", probe_columns())
    dst = tmp_path / "probe"
    dst.mkdir()
    left = reuse_records(probe, expand(probe), str(dst), [str(tmp_path / "table1")], log=lambda _: None)
    assert sorted({r.column for r in left}) == ["Pb-DT-minmax-rtg10"] and len(left) == 2
    copied = sorted(p.name.rsplit("-", 2)[0] for p in dst.iterdir())
    assert copied == ["Pb-DT-minmax-medium-replay-v0", "Pb-DT-minmax-medium-replay-v0",
                      "Pb-QT-minmax-medium-replay-v0", "Pb-QT-minmax-medium-replay-v0"]
