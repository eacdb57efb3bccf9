"""Updates per second of each Table 1 algorithm at its Table 1 configuration, one torch thread: the rates behind
`dtr_table1.CPU_RATES`, the core-hour estimates the table scripts print before they start.

    PYTHONPATH=. python baselines/cpu_rates.py            # about a minute; run it on a quiet machine

Random Hopper-v5 transitions (20000, seed 0), the MLP algorithms at batch 256 and their defaults, DT / QT / DTR at
`dtr_table1.SMALL_DT`; each rate is timed over N updates after 5 warm-up updates (the batch draw included), wall and
CPU time. Other work on the cores lowers the wall rate: the line says the load average before and after.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dtr_table1 import CPU_RATES, SMALL_DT  # noqa: E402

from pbrl.errors import run_script  # noqa: E402

UPDATES = {"iql": 300, "td3bc": 300, "cql": 40, "dt": 40, "qt": 20, "dtr": 20}


def main() -> None:
    import torch

    from pbrl.data import collect_episodes
    from pbrl.policies.base import PolicySpec, default_config, make_policy

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the trainer runs
    ds = collect_episodes("Hopper-v5", num_transitions=20000, seed=0)
    spec = PolicySpec.from_dataset(ds)
    print(f"load average {os.getloadavg()[0]:.2f} at the start; 1 torch thread", flush=True)
    for algo, n in UPDATES.items():
        overrides = dict(SMALL_DT) if algo in ("dt", "qt", "dtr") else {"batch_size": 256}
        torch.manual_seed(0)
        pol = make_policy(algo, spec, default_config(algo, **overrides), total_steps=100_000)
        draw = pol.make_sampler(ds, torch.Generator().manual_seed(0))
        for _ in range(5):
            pol.update(draw())
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            pol.update(draw())
        wall, cpu = n / (time.perf_counter() - t), n / (time.process_time() - c)
        print(f"{algo}: {wall:.3g} updates/s wall, {cpu:.3g} per CPU-second over {n} updates "
              f"(dtr_table1.CPU_RATES: {CPU_RATES[algo]})", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)


if __name__ == "__main__":
    run_script(main)
