"""Why does Pb-DT-minmax stay at the data's level on the plateau budget? A probe of DT's return scale.

    PYTHONPATH=. python baselines/dt_rtg_probe.py --workers 1 --threads 1   # about 25 minutes per run, 1 thread

On hopper-medium-replay the plateau Table 1's Pb-DT-minmax scores 4-9 at every evaluation of all 3 seeds
(results/dtr_table1-plateau.md), where the data's episodes average 6.8: DT behaves as plain behaviour cloning.
DT divides returns-to-go by `rtg_scale` before embedding them: CORL's 1000 (DTConfig's default) suits the true
hopper reward, whose returns reach about 3000; the [0, 1]-shifted learned reward gives returns of at most a few
hundred, so the return token spans well under 1 and the conditioning signal is small. QT and DTR use DTR's scale of
10 (dtr.md: RTG = sum of r~ / 10). This grid trains the Pb-DT-minmax column again with `rtg_scale` 10, everything
else equal (same labels, reward model, shift, updates, evaluation), and sets it beside the plateau records of
Pb-DT-minmax (scale 1000) and Pb-QT-minmax (scale 10 plus the critic), which are reused, not trained again
(`--reuse`): if DT at scale 10 rises towards Pb-QT, the scale explains part of the Pb-QT > Pb-DT gap in
Table 1; if it stays, the scale does not.

Runs through pbrl.sweep (records under runs/sweeps/dt_rtg-plateau/); writes results/dt_rtg-plateau.md. The reused
runs must have finished in the plateau sweep first; a run with no record anywhere is trained here.
"""

from __future__ import annotations

import os

try:
    from baselines.dtr_table1 import BUDGETS, PAPER, columns, dataset_id, ensure_built, parser
except ImportError:  # run as a script: the script's folder is on sys.path
    from dtr_table1 import BUDGETS, PAPER, columns, dataset_id, ensure_built, parser  # type: ignore[no-redef]

from pbrl.errors import run_script
from pbrl.sweep import Grid, sweep_and_table

PROBE_SCALE = 10.0  # DTR's (and pbrl's QT / DTR's default) return scale


def probe_columns() -> list[dict]:
    """Pb-DT-minmax as in the plateau Table 1 (so its records are reused), the same at `PROBE_SCALE`, and
    Pb-QT-minmax (reused)."""
    plateau = {c["name"]: c for c in columns("plateau")}
    dt = plateau["Pb-DT-minmax"]
    rescaled = {**dt, "name": f"Pb-DT-minmax-rtg{PROBE_SCALE:g}", "policy": {**dt["policy"], "rtg_scale": PROBE_SCALE}}
    return [dt, rescaled, plateau["Pb-QT-minmax"]]


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(budget="plateau")
    ap.add_argument("--datasets", nargs="*", default=["hopper-medium-replay"])
    ap.add_argument("--reuse", nargs="*", default=["runs/sweeps/dtr_table1-plateau", "results/records/dtr_table1-plateau"],
                    help="sweep folders whose finished runs of the same config stand in for this grid's")
    args = ap.parse_args()
    b = BUDGETS["plateau"]
    ensure_built(args.datasets)
    cols = probe_columns()
    grid = Grid(
        name="dt_rtg-plateau",
        runner="pbrl.pipeline:run_record",
        budget="plateau",
        base=b["base"],
        axes={"dataset": [dataset_id(n) for n in args.datasets], "seed": b["seeds"]},
        columns=cols,
        meta={
            "title": "DT's return scale on the plateau budget: Pb-DT-minmax at rtg_scale 1000 and 10, beside Pb-QT-minmax",
            "reference": {k: {"Pb-DT": v["Pb-DT"], "Pb-QT": v["Pb-QT"]} for k, v in PAPER.items() if k in args.datasets},
            "pairs": [[cols[1]["name"], cols[0]["name"]], [cols[2]["name"], cols[1]["name"]]],
            "reference_columns": {cols[0]["name"]: "Pb-DT", cols[2]["name"]: "Pb-QT"},
            "reference_note": "DTR Table 1 (crowdsourced Uni-RLHF labels on D4RL -v2); pbrl's datasets are built "
            "locally with scripted labels, so compare orders, not digits. Every column: the plateau Table 1's "
            "settings (20k updates at the small transformer, 2000 labels of 200 steps, the member z-scored reward "
            f"mapped onto [0, 1]); Pb-DT-minmax divides returns-to-go by 1000 (CORL's DT), -rtg{PROBE_SCALE:g} and "
            f"Pb-QT-minmax by {PROBE_SCALE:g} (DTR's). Pb-DT-minmax and Pb-QT-minmax are the plateau sweep's records, reused.",
        },
    )
    reuse = [r for r in args.reuse if os.path.isdir(r)]
    for path in sweep_and_table(grid, args.out, args.results, workers=args.workers, ray_address=args.ray_address,
                                threads=args.threads, reuse=reuse, only=args.only).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
