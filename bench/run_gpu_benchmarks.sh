#!/usr/bin/env bash
# The GPU tables of docs/benchmarks.md in one go, on one CUDA GPU (about 11 minutes on an H200): the CUDA-graph step's tests,
# the training step against its CUDA-graph ceiling, one paper MNIST run of 3 rounds (fp32 and bf16-mixed) and
# selection at 300,000 candidates, BADGE selection at 30,000, and BALD and BADGE through train.py. Each part runs
# under its own time limit, so one failure leaves the others' tables.
#
#     bash bench/run_gpu_benchmarks.sh [output folder]
#
# PARTS="badge_selection baseline_tests" (say) runs only the parts named (see the part lines at the end).
set -u
cd "$(dirname "$0")/.."
out="${1:-bench_gpu_results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

part() {  # part NAME SECONDS COMMAND...: run COMMAND, keep its output in $out/NAME.txt
    local name=$1 limit=$2
    shift 2
    [ -n "${PARTS:-}" ] && [[ " $PARTS " != *" $name "* ]] && return 0
    echo "=== $name: $*"
    local started=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>"$out/$name.err"
    local status=$?
    tail -40 "$out/$name.txt"
    [ $status -ne 0 ] && { echo "--- $name exited with $status; last lines of its stderr:"; tail -25 "$out/$name.err"; }
    echo "=== $name: $((SECONDS - started)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
part cuda_tests 100 python -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py
part training 180 python bench/bench_training.py --device cuda --images 16384 --threads 8 --epochs 3 --no-extras \
    --only "alvae-pl" "ceiling" "bare loop"
part experiment 120 python bench/bench_experiment.py --device cuda --rounds 3
part experiment_bf16 90 python bench/bench_experiment.py --device cuda --rounds 3 --precision bf16-mixed
part selection 50 python bench/bench_selection.py --device cuda --sizes 300000 --no-reference --algorithms dense
# BADGE at the issue's 30,000 candidates, the authors'-code reference on the CPU beside it (60 s).
part badge_selection 120 python bench/bench_selection.py --device cuda --methods badge --sizes 30000 --dim 512 \
    --ref-picks 20
# BALD and BADGE on the GPU, where training replays the CUDA-graph step (with dropout for BALD): one round each
# through train.py. (Not the kill-and-resume tests: GPU training is not bit-reproducible, resumed or not.)
part baseline_tests 120 python -m pytest -q -p no:cacheprovider tests/test_bald_badge.py
