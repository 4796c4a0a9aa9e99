#!/usr/bin/env bash
# The Table 1 runs on a 2-core CPU (recipe and solvers: CONV_RECIPE, MLP_RECIPE and ADAPTIVE in
# nodebook/experiments/mnist.py, which become the chapter's book profile when the runs finish):
# two resumable queues, one thread each (two single-thread processes train faster together than
# one process on two threads).
# Rerun the same command after an interrupt: every run resumes from its last epoch.
#   bash scripts/train_table1.sh            # both queues in the background, logs in logs/
set -u
cd "$(dirname "$0")/.."
mkdir -p logs
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ -z "${NODEBOOK_DATA:-}" ] && [ -d ../shared/data/mnist/raw ]; then
  export NODEBOOK_DATA="$(cd ../shared/data && pwd)"
fi
PY=${PY:-.venv/bin/python}
queue() {  # each run resumes where it stopped; a failed start is retried (e.g. while files are edited)
  for model in "$@"; do
    for attempt in 1 2 3 4 5; do
      "$PY" -m nodebook.experiments.mnist --model "$model" --threads 1 && break
      echo "run of $model failed (attempt $attempt); retrying in 60 s" >&2
      sleep 60
    done
  done
}
nohup bash -c "$(declare -f queue); PY=$PY; queue odenet" > logs/table1_odenet.log 2>&1 &
nohup bash -c "$(declare -f queue); PY=$PY; queue resnet stem mlp rknet" > logs/table1_others.log 2>&1 &
echo "started: logs/table1_odenet.log, logs/table1_others.log"
