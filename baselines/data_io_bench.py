"""Data-layer benchmark: load time of 1M Hopper-sized transitions (D4RL hdf5 and Minari) and the memory of 2M.

Run: python baselines/data_io_bench.py [--transitions 1000000] [--out results/data_io.md]
Hopper sizes: 11-d observations, 3-d actions, 1000-step episodes. The data is synthetic (random numbers): the
numbers measure IO and layout, not learning.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np
from record import recorded  # baselines/record.py (the script's folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transitions", type=int, default=1_000_000)
    ap.add_argument("--out", default=None, help="also write the output with its conditions (results/data_io.md)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, recorded(args.out, "Data layer load times"):
        os.environ["MINARI_DATASETS_PATH"] = os.path.join(tmp, "minari")
        from pbrl.data import EpisodeDataset, load_dataset
        from pbrl.data.d4rl_io import write_d4rl

        n = args.transitions
        rng = np.random.default_rng(0)
        timeouts = np.zeros(n, bool)
        timeouts[999::1000] = True
        path = os.path.join(tmp, "hopper-bench.hdf5")
        write_d4rl(
            path,
            rng.normal(size=(n, 11)).astype(np.float32),
            rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
            rng.normal(size=n).astype(np.float32),
            np.zeros(n, bool),
            timeouts,
        )
        t0 = time.perf_counter()
        ds = load_dataset(f"d4rl:{path}")
        _ = ds.observations, ds.next_observations
        t_d4rl = time.perf_counter() - t0
        print(f"D4RL hdf5 -> EpisodeDataset: {ds.num_transitions} transitions in {t_d4rl:.2f} s")
        t0 = time.perf_counter()
        ds.to_minari("bench/hopper/bench-v0")
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = EpisodeDataset.from_minari("bench/hopper/bench-v0")
        _ = back.observations, back.next_observations
        t_minari = time.perf_counter() - t0
        print(f"EpisodeDataset -> Minari write: {t_write:.2f} s; Minari -> EpisodeDataset: {t_minari:.2f} s")
        t0 = time.perf_counter()
        tr = back.transitions("cpu")
        print(f"transitions() as torch tensors: {time.perf_counter() - t0:.2f} s, {len(tr)} rows")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        two = EpisodeDataset(
            np.concatenate([back.observations_all, back.observations_all]),
            np.concatenate([back.actions, back.actions]),
            np.concatenate([back.rewards, back.rewards]),
            np.concatenate([back.terminations, back.terminations]),
            np.concatenate([back.truncations, back.truncations]),
            np.concatenate([back.episode_starts, back.episode_starts[1:] + back.num_transitions]),
        )
        nbytes = sum(a.nbytes for a in (two.observations_all, two.actions, two.rewards, two.terminations, two.truncations))
        nbytes += two.observations.nbytes + two.next_observations.nbytes
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{two.num_transitions} transitions: arrays incl. flat obs/next_obs views {nbytes / 2**20:.0f} MiB; "
            f"process peak RSS {peak:.0f} MiB (was {before:.0f} MiB before building it)"
        )


if __name__ == "__main__":
    main()
