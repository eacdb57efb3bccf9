#!/usr/bin/env bash
# The policies' one GPU check (run from the repo root on a machine with one NVIDIA GPU and 16 CPU cores):
# 1. the slow learning tests, each in its own CPU process (pytest-xdist), while
# 2. DTR update throughput on the GPU: release configuration, small configuration, window batching, and a longer
#    timed run of the release configuration from which the 50k-step wall time is projected.
# Writes into ${OUT:-results} : policy_throughput_gpu.{json,md}, learning.log, throughput.log
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
