#!/usr/bin/env bash
# The LGG distillation experiment (lgg_distill.py) at 256x256 on one CUDA GPU, in calls of about 8 minutes.
#
#   bench/experiments/lgg_distill_gpu.sh PACK OUT
#
# PACK: LGG FLAIR packed by `bench/experiments/lgg_webp_pack.py pack` (full size; its pack.json
# records how it was made to fit the transfer limit, and is copied into the results). OUT: where
# the session log and the packed results (results.tgz.partNN, 15 MB each) go.
#
# Order: the teacher (Attention U-Net, the CPU teacher's recipe at 256x256 but 30 epochs instead
# of 40; the CPU teacher reached 0.816 val Dice at epoch 22, 0.836 at its best, epoch 30) and
# every student alone start together, since runs alone need no teacher; when the teacher has
# finished, every PNCD run starts. At DEADLINE seconds every run still going is stopped (a
# stopped run has no row; the tables say which are missing), the tables are written, and the
# distillation overhead on this GPU is measured if time is left. Runs share the GPU; each has
# --threads 1 on the CPU.
#
# Environment: DEADLINE (s, default 480), SIZE (256), STEPS (steps per epoch, 100), EPOCHS
# (students, 15), TEACHER_EPOCHS (30), SEEDS (0,1,2), PY (python3), W (work folder, /tmp/lggd),
# TEACHER_RUN (a teacher run carried from an earlier call, taken as it is: no teacher training,
# the PNCD runs start at once), ROWS_IN (a folder of rows scored in an earlier call: those jobs
# are skipped). The whole grid does not fit one call of 8 minutes (first call, 2026-11-29: the
# teacher reached 25 of 30 epochs), so it takes two: the teacher and the runs alone, then
# TEACHER_RUN + ROWS_IN.
set -u
export PYTHONUNBUFFERED=1
if [ $# -lt 2 ]; then sed -n '2,24p' "$0"; exit 2; fi
PACK=$(cd "$1" && pwd) OUTD=$2
PY=${PY:-python3} DEADLINE=${DEADLINE:-480} SIZE=${SIZE:-256} STEPS=${STEPS:-100}
EPOCHS=${EPOCHS:-15} TEACHER_EPOCHS=${TEACHER_EPOCHS:-30} SEEDS=${SEEDS:-0,1,2}
W=${W:-/tmp/lggd}
T0=$(date +%s)
el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
rm -rf "$W"; mkdir -p "$W/work/logs" "$W/results" "$OUTD"
exec > >(tee "$OUTD/session.log") 2>&1

# pncd not installed (a bare GPU image): lay the package out as the wheel does (pyproject's package-dir)
if ! $PY -c "import pncd.export" 2>/dev/null; then
    if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --no-compile --target "$W/site" .whl/*.whl; fi
    mkdir -p "$W/pkg" && cp -r pncd "$W/pkg/" && cp -r export "$W/pkg/pncd/export" \
        && cp -r bench "$W/pkg/pncd/bench" && cp -r targets "$W/pkg/pncd/targets"
    export PYTHONPATH=$W/pkg:$W/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c "import sys, torch, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', \
    numpy.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
nproc

el "unpacking $PACK"
$PY bench/experiments/lgg_webp_pack.py unpack "$PACK" "$W/data" || exit 1
cp "$PACK/pack.json" "$W/results/data_pack.json"
DATA=$W/data TEACHER=$W/work/teacher
G=("$PY" bench/experiments/lgg_distill.py --data "$DATA" --teacher "$TEACHER" --work "$W/work" --results "$W/results"
   --size "$SIZE" --seeds "$SEEDS" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --threads 1)

if [ -n "${ROWS_IN:-}" ]; then mkdir -p "$W/work/rows" && cp "$ROWS_IN"/*.json "$W/work/rows/"; fi
pids=()
stop_all() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done; sleep 2; }
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
progress() {  # teacher epochs, rows scored
    local te=0
    [ -f "$TEACHER/log.jsonl" ] && te=$(grep -c '"type": "epoch"' "$TEACHER/log.jsonl")
    local rows
    rows=$(ls "$W/work/rows" 2>/dev/null | grep -v teacher | sed 's/.json//' | tr '\n' ' ')
    el "teacher $te/$TEACHER_EPOCHS epochs; scored: $rows"
}
wait_for() {  # wait_for PID...: until they exit or the deadline passes (then 1)
    local n=0
    while :; do
        local alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && return 0
        [ "$(left)" -le 0 ] && return 1
        sleep 3
        n=$((n + 1)); [ $((n % 10)) = 0 ] && progress
    done
}

if [ -n "${TEACHER_RUN:-}" ]; then
    mkdir -p "$TEACHER" && cp "$TEACHER_RUN"/{config.json,log.jsonl,best.safetensors} "$TEACHER/"
    TEACHER_EPOCHS=$($PY -c "import json; print(json.load(open('$TEACHER/config.json'))['options']['epochs'])")
    G+=(--teacher-as-is)  # taken as it is, even if its run stopped early (teacher.json says)
fi
launch() {  # launch KIND: one runner per student and seed, each in its own process group
    for st in enet mobilenetv2 resnet18; do
        for s in ${SEEDS//,/ }; do
            setsid "${G[@]}" --only "$st-$1-s$s" > "$W/work/logs/runner-$st-$1-s$s.out" 2>&1 &
            pids+=($!)
        done
    done
}

el "teacher and every student alone"
tp=""
if [ -n "${TEACHER_RUN:-}" ]; then
    el "teacher carried from $TEACHER_RUN"
else
    setsid "$PY" -m pncd train --model attention_unet --data "$DATA" --size "$SIZE" --batch 8 \
        --epochs "$TEACHER_EPOCHS" --steps-per-epoch "$STEPS" --lesion-fraction 0.5 --seed 0 --threads 1 \
        --out "$TEACHER" > "$W/work/logs/teacher.log" 2>&1 &
    tp=$!
    pids+=($tp)
fi
launch alone

if { [ -z "$tp" ] || wait_for "$tp"; } && [ -f "$TEACHER/best.safetensors" ]; then
    [ -n "$tp" ] && el "teacher done: $(tail -c 300 "$W/work/logs/teacher.log" | tr '\r' '\n' | tail -1)"
    "${G[@]}" --only none > "$W/work/logs/teacher-score.out" 2>&1; tail -1 "$W/work/logs/teacher-score.out"
    el "every student with PNCD"
    launch pncd
else
    el "teacher not finished by the deadline: no PNCD runs"
fi
wait_for "${pids[@]}" || { el "deadline of ${DEADLINE}s: stopping the runs still going"; stop_all; }
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
el "tables"
"${G[@]}" --tables-only 2>&1 | tail -2
cat "$W/results/results.md" 2>/dev/null | head -12
for f in "$W"/work/logs/runner-*.out; do grep -H "test Dice\|failed\|Error" "$f" | tail -1; done

if [ "$(left)" -ge 45 ] && [ "$SIZE" -ge 128 ]; then
    el "distillation overhead on this GPU"
    timeout 60 "$PY" bench/experiments/distill_overhead.py --device cuda --amp --size "$SIZE" --batch 8 --steps 20 \
        --warmup 3 --json "$W/results/distill_overhead_gpu.json" 2>&1 | tail -8
fi

el "packing"
mkdir -p "$W/pack/teacher"
cp "$TEACHER"/{config.json,log.jsonl} "$W/pack/teacher/" 2>/dev/null
cp "$TEACHER/best.safetensors" "$W/pack/teacher/" 2>/dev/null
cp -r "$W/results" "$W/pack/results"; cp -r "$W/work/logs" "$W/pack/logs"
cp -r "$W/work/rows" "$W/pack/rows" 2>/dev/null
for r in "$W"/work/runs/*/; do
    j=$(basename "$r"); mkdir -p "$W/pack/runs/$j"; cp "$r"/{config.json,log.jsonl} "$W/pack/runs/$j/" 2>/dev/null
done
tar -C "$W" -czf "$W/results.tgz" pack && split -b 15m -d "$W/results.tgz" "$OUTD/results.tgz.part"
ls -la "$OUTD"
el end
