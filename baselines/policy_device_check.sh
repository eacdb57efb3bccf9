#!/usr/bin/env bash
# The policies' one GPU check (run from the repo root on a machine with one NVIDIA GPU and 16 CPU cores):
# 1. the slow learning tests, each in its own CPU process (pytest-xdist), while
# 2. DTR update throughput on the GPU: release configuration, small configuration, window batching, and a longer
#    timed run of the release configuration from which the 50k-step wall time is projected;
# 3. Table 1 at the papers' budget (baselines/dtr_table1_gpu.py): the measured rates and the whole table's wall-time
#    estimate, then a 1% slice of it within 5 minutes (each unit's measured vs estimated seconds).
# Writes into ${OUT:-results} : policy_throughput_gpu.{json,md}, learning.log, throughput.log,
#   dtr_table1_estimate.log, dtr_table1_x0.01.log, dtr_table1-paper/ (estimate.json), dtr_table1-x0.01/ (records)
set -u
OUT=${OUT:-results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd) PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
(OMP_NUM_THREADS=1 python3 -m pytest tests/policies/test_policy_learning.py -m slow -n 7 -q -s -p no:cacheprovider \
    > "$OUT/learning.log" 2>&1; echo "learning tests exit $?" >> "$OUT/learning.log") &
LEARN=$!
python3 baselines/policy_throughput.py --device cuda --only dtr --data-env Pendulum-v1 --data-size 20000 \
    --dtr-steps 50 --dtr-small-steps 100 --dtr-run-steps ${DTR_RUN_STEPS:-3000} --threads 4 \
    --out "$OUT/policy_throughput_gpu" 2>&1 | tee "$OUT/throughput.log"
wait $LEARN
cat "$OUT/learning.log"
python3 baselines/dtr_table1_gpu.py --out "$OUT/dtr_table1-paper" --estimate-only 2>&1 | tee "$OUT/dtr_table1_estimate.log"
mkdir -p "$OUT/dtr_table1-x0.01" && cp "$OUT/dtr_table1-paper/estimate.json" "$OUT/dtr_table1-x0.01/"
python3 baselines/dtr_table1_gpu.py --out "$OUT/dtr_table1-x0.01" --steps-fraction 0.01 --budget-minutes 5 2>&1 \
    | tee "$OUT/dtr_table1_x0.01.log"
