"""results/quickstart.md: `pbrl quickstart` run as a newcomer runs it, with its wall time and the machine's load.

    python baselines/quickstart_time.py [--fresh] [--out results/quickstart.md]

--fresh builds the quickstart dataset in a new, empty Minari folder first (the first-run time a newcomer sees);
otherwise the dataset in the usual Minari folder is reused when it exists. Progress bars go to the terminal; the
score table and the wall times go to the file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from record import recorded  # baselines/record.py (the script's folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", action="store_true", help="build the dataset in an empty Minari folder first")
    ap.add_argument("--out", default="results/quickstart.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, recorded(args.out, "pbrl quickstart: wall time and scores", 1):
        env = dict(os.environ)
        if args.fresh:
            env["MINARI_DATASETS_PATH"] = os.path.join(tmp, "minari")
        cmd = [sys.executable, "-m", "pbrl.cli", "quickstart", "--out", os.path.join(tmp, "run")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("run folders:"):  # a temporary path, gone after the run
                print(line, end="")
        if proc.wait() != 0:
            raise SystemExit(f"pbrl quickstart exited with status {proc.returncode}")
        print(f"\nwall time of `pbrl quickstart` (1 torch thread, its default): {time.perf_counter() - t0:.0f} s"
              + (" including the dataset build" if args.fresh else ""))


if __name__ == "__main__":
    main()
