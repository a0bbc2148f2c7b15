#!/bin/bash
# One device session (GPU): setup, CUDA smoke checks, distillation overhead on the GPU,
# the reference grid with 5 seeds (parallel runners), a longer ENet schedule; packs into $OUT.
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s)
el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
DEV=${DEV:-cuda}
DEADLINE=${DEADLINE:-430}
PY=${PY:-python3}
W=${W:-/tmp/dev}; rm -rf "$W"; mkdir -p "$W/smoke" "$W/pack"
exec > >(tee "$OUTD/session.log") 2>&1
if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --no-compile --target "$W/site" .whl/*.whl || echo "pip failed"; fi
mkdir -p "$W/pkg" && cp -r pncd "$W/pkg/" && cp -r export "$W/pkg/pncd/export" && cp -r bench "$W/pkg/pncd/bench" && cp -r targets "$W/pkg/pncd/targets"
export PYTHONPATH=$W/pkg:$W/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, numpy, onnxruntime; print('python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'ort', onnxruntime.__version__, onnxruntime.get_available_providers(), 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
DATA=$PWD/.dev/lgg128
el; echo "starting grid"
PYTHON=$PY THREADS=2 bench/grid_gpu.sh "$DATA" "$W/gw" "$W/pack/grid" 0,1,2,3,4 "$DEADLINE" ${GRID_EXTRA:-} > "$W/pack/grid_gpu.log" 2>&1 &
GRIDPID=$!
# longer ENet schedule (30 epochs x 60 steps), 2 seeds, alone and + PNCD (teacher copied from the grid)
GL=$W/glong
LONG=($PY bench/reference_grid.py --data "$DATA" --work "$GL" --results "$W/pack/long" --seeds 0,1 --epochs ${LONG_EPOCHS:-30} --threads 2 ${GRID_EXTRA:-})
mkdir -p "$GL/runs" "$GL/rows"
setsid bash -c "$(declare -p LONG); \"\${LONG[@]}\" --only 'enet-alone-*'" > "$W/pack/long_alone.log" 2>&1 & LA=$!
setsid bash -c "$(declare -p LONG W GL); while [ ! -f $W/gw/rows/dcsaunet-s0.json ]; do sleep 3; done; cp -r $W/gw/runs/dcsaunet-s0 $GL/runs/; cp $W/gw/rows/dcsaunet-s0.json $GL/rows/; \"\${LONG[@]}\" --only 'enet-pncd-*'" > "$W/pack/long_pncd.log" 2>&1 & LP=$!

S=$W/smoke
sm() { [ -n "${SKIP_SMOKE:-}" ] && return; local name=$1; shift; el; echo "SMOKE $name: $*"; "$@" > "$S/$name.log" 2>&1; local rc=$?; echo "SMOKE $name rc=$rc :: $(tail -n 2 "$S/$name.log" | tr '\n' ' ' | cut -c1-400)"; }
C=(--data "$DATA" --size 64 --batch 8 --steps-per-epoch 10)
sm teacher $PY -m pncd train --model ${SMOKE_TEACHER:-dcsaunet} "${C[@]}" --epochs 1 --out "$S/t" --device $DEV
sm train $PY -m pncd train --model enet "${C[@]}" --epochs 2 --out "$S/s" --device $DEV
sm resume $PY -m pncd train --model enet "${C[@]}" --epochs 3 --out "$S/s" --device $DEV --resume
sm distill_paper $PY -m pncd distill --teacher "$S/t" --student enet "${C[@]}" --epochs 2 --out "$S/d" --device $DEV
sm distill_mbv2 $PY -m pncd distill --teacher "$S/t" --student mobilenetv2 "${C[@]}" --epochs 1 --out "$S/d2" --device $DEV
sm ddp_train $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m pncd train --model enet "${C[@]}" --epochs 2 --out "$S/ddp" --device $DEV
sm ddp_distill $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m pncd distill --teacher "$S/t" --student enet "${C[@]}" --epochs 2 --out "$S/ddpd" --device $DEV
sm eval $PY -m pncd eval "$S/d" --split val --device $DEV --overlays 2
sm export $PY -m pncd export "$S/d" --target onnxruntime --precision fp32 --out "$S/x"
sm bench $PY -m pncd bench "$S/x" --split val --device $DEV --out "$S/b"
for f in "$S"/*/log.jsonl; do echo "$f: $(tail -n 1 "$f" | cut -c1-300)"; done
el; echo "overhead"
$PY bench/distill_overhead.py --device $DEV --amp ${OVH:---size 256 --batch 8 --steps 20 --warmup 3} --json "$W/pack/overhead_gpu_amp.json"
$PY bench/distill_overhead.py --device $DEV ${OVH:---size 256 --batch 8 --steps 20 --warmup 3} --json "$W/pack/overhead_gpu_fp32.json"
el; echo "waiting for the grid"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait $GRIDPID
el; echo "grid done; stopping the long runs"
kill -TERM -- -$LA -$LP 2>/dev/null; sleep 2
"${LONG[@]}" --tables-only
# pack: rows, logs, tables, smoke logs, small checkpoints of the long ENets and of every PNCD student seed's best (not ResNet-18)
cp -r "$W/gw/rows" "$W/pack/rows"; cp -r "$W/gw/logs" "$W/pack/logs"; cp -r "$GL/rows" "$W/pack/long_rows"; cp -r "$GL/logs" "$W/pack/long_logs" 2>/dev/null
cp "$S"/*.log "$W/pack/logs/" 2>/dev/null
mkdir -p "$W/pack/runs"
BEST_MB=$($PY -c "
import json, glob
rows = [json.load(open(f)) for f in glob.glob('$W/gw/rows/mobilenetv2-pncd-*.json')]
print(max(rows, key=lambda r: r.get('val_dice_best') or -1)['job'] if rows else 'none')")
echo "best MobileNetV2 PNCD seed by val Dice: $BEST_MB"
for r in "$GL"/runs/enet-* "$W"/gw/runs/enet-pncd-* "$W"/gw/runs/enet-alone-* "$W/gw/runs/$BEST_MB"; do
  [ -f "$r/best.safetensors" ] || continue
  d="$W/pack/runs/$(basename "$(dirname "$(dirname "$r")")")-$(basename "$r")"; mkdir -p "$d"
  cp "$r/best.safetensors" "$r/config.json" "$r/log.jsonl" "$d/"
done
tar -C "$W" -czf "$W/pack.tgz" pack
ls -la "$W/pack.tgz"
split -b 15m -d "$W/pack.tgz" "$OUTD/pack.tgz.part"
ls -la "$OUTD"
el; echo "end"
