#!/bin/bash
# Device call 2: retrain the teacher (same recipe and seed), then the missing PNCD seeds in parallel.
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"; DEV=${DEV:-cuda}; DEADLINE=${DEADLINE:-250}; PY=${PY:-python3}
W=${W:-/tmp/dev2}; rm -rf "$W"; mkdir -p "$W/pack" "$W/gw/rows" "$W/gw/logs"
exec > >(tee "$OUTD/session.log") 2>&1
if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --no-compile --target "$W/site" .whl/*.whl || echo "pip failed"; fi
mkdir -p "$W/pkg" && cp -r pncd "$W/pkg/" && cp -r export "$W/pkg/pncd/export" && cp -r bench "$W/pkg/pncd/bench" && cp -r targets "$W/pkg/pncd/targets"
export PYTHONPATH=$W/pkg:$W/site
cp .dev/rows1/*.json "$W/gw/rows/"
DATA=$PWD/.dev/lgg128
G=($PY bench/reference_grid.py --data "$DATA" --work "$W/gw" --results "$W/pack/grid" --seeds 0,1,2,3,4 --threads 2 ${GRID_EXTRA:-}
   --command "bench/grid_gpu.sh (second device call: teacher retrained, then the missing PNCD seeds; runners of python bench/reference_grid.py --data DATA --work WORK --seeds 0,1,2,3,4 --threads 2)")
el; "${G[@]}" --only dcsaunet-s0 > "$W/gw/logs/runner-teacher.out" 2>&1
el; echo "teacher: $(cat $W/gw/rows/dcsaunet-s0.json | head -c 300)"
pids=()
for p in 'enet-pncd-s3' 'enet-pncd-s4' 'mobilenetv2-pncd-s1' 'mobilenetv2-pncd-s2' 'mobilenetv2-pncd-s3' 'mobilenetv2-pncd-s4' 'resnet18-pncd-s1' 'resnet18-pncd-s2' 'resnet18-pncd-s3' 'resnet18-pncd-s4'; do
  setsid "${G[@]}" --only "$p" > "$W/gw/logs/runner-$p.out" 2>&1 & pids+=($!)
done
while :; do
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  if [ $(( $(date +%s) - T0 )) -ge "$DEADLINE" ]; then el; echo "deadline: stopping"; for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done; sleep 2; break; fi
  sleep 3
done
el; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
"${G[@]}" --tables-only
cp -r "$W/gw/rows" "$W/pack/rows"; cp -r "$W/gw/logs" "$W/pack/logs"
best() { $PY -c "
import json, glob, os
rows = [json.load(open(f)) for f in glob.glob('$W/gw/rows/$1-pncd-*.json')]
rows = [r for r in rows if os.path.isfile('$W/gw/runs/' + r['job'] + '/best.safetensors')]
print(max(rows, key=lambda r: r.get('val_dice_best') or -1)['job'] if rows else 'none')"; }
mkdir -p "$W/pack/runs"
for j in $(best mobilenetv2) $(best resnet18) enet-pncd-s3 enet-pncd-s4; do
  r=$W/gw/runs/$j; [ -f "$r/best.safetensors" ] || continue
  mkdir -p "$W/pack/runs/$j"; cp "$r/best.safetensors" "$r/config.json" "$r/log.jsonl" "$W/pack/runs/$j/"; echo "packed $j"
done
tar -C "$W" -czf "$W/pack.tgz" pack; ls -la "$W/pack.tgz"
split -b 15m -d "$W/pack.tgz" "$OUTD/pack.tgz.part"; ls -la "$OUTD"; el; echo end
