#!/usr/bin/env bash
# The reference grid (bench/experiments/reference_grid.py) on one GPU machine, with five parallel runners.
#
# The grid's networks are small: one training job leaves a large GPU mostly idle, so five jobs
# share it. Each runner takes its own jobs (the DCSAU-Net teacher first, since every PNCD job
# needs it), writes its own rows and rewrites the tables after each row; at the end (or at the
# deadline, when every runner is stopped: a stopped run resumes next time) the tables are
# rewritten once from all rows. Deployment jobs are left out: run them afterwards on the CPU
# that is to be measured, with `reference_grid.py ... --only 'deploy-*'`.
#
#   bench/experiments/grid_gpu.sh DATA WORK RESULTS [SEEDS] [DEADLINE_S] [more reference_grid.py options]
#   bench/experiments/grid_gpu.sh path/to/lgg-flair runs/grid-gpu bench/results/lgg-gpu 0,1,2,3,4
#
# Environment: PYTHON (default python3), THREADS (CPU threads per job, default 2).
set -u
if [ $# -lt 3 ]; then
    sed -n '2,15p' "$0"
    exit 2
fi
DATA=$1 WORK=$2 RESULTS=$3 SEEDS=${4:-0,1,2,3,4} DEADLINE=${5:-0}
shift $(( $# < 5 ? $# : 5 ))
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
GRID=("$PY" "$HERE/reference_grid.py" --data "$DATA" --work "$WORK" --results "$RESULTS" --seeds "$SEEDS" --threads "${THREADS:-2}" "$@")
RECORD="bench/experiments/grid_gpu.sh $DATA $WORK $RESULTS $SEEDS (parallel runners of: python bench/experiments/reference_grid.py --data $DATA --work $WORK --seeds $SEEDS --threads ${THREADS:-2} $*)"
mkdir -p "$WORK/logs"
rm -f "$WORK/logs/teacher.done"

grid() { "${GRID[@]}" --command "$RECORD" "$@"; }
after_teacher() { while [ ! -f "$WORK/logs/teacher.done" ]; do sleep 3; done; }

runner() {  # runner NAME FIRST-PATTERN [THEN-PATTERNS...]: FIRST now, the others once the teacher is done
    local name=$1 first=$2
    shift 2
    {
        grid --only "$first"
        [ "$name" = a ] && touch "$WORK/logs/teacher.done"
        after_teacher
        for p in "$@"; do grid --only "$p"; done
        echo "runner $name finished"
    } >"$WORK/logs/runner-$name.out" 2>&1
}

pids=()
start() { setsid bash -c "$(declare -p GRID RECORD WORK; declare -f grid after_teacher runner); runner $*" & pids+=($!); }
start a "'dcsaunet-*'" "'enet-pncd-*'" "'enet-pmd-*'"
start b "'enet-alone-*'" "'mobilenetv2-pncd-*'" "'enet-rmd-*'"
start c "'mobilenetv2-alone-*'" "'resnet18-pncd-*'"
start d "'resnet18-alone-*'" "'enet-rd-*'"
start e "'unet-*'" "'enet-pnscd-*'"

t0=$(date +%s)
while :; do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    if [ "$DEADLINE" -gt 0 ] && [ $(( $(date +%s) - t0 )) -ge "$DEADLINE" ]; then
        echo "deadline of ${DEADLINE}s reached: stopping the runners (their runs resume next time)"
        for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
        sleep 2
        break
    fi
    sleep 5
done
grid --tables-only
