#!/bin/bash
# Device call 2 (same warm machine): resume the teacher's last epochs and the unfinished runs alone, score.
W=/tmp/lggd; export PYTHONPATH=$W/pkg:$W/site PYTHONUNBUFFERED=1; R=$PWD; T0=$(date +%s); OUTD=$OUT
el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
D=$W/data; T=$W/work/teacher
G=(python3 bench/experiments/lgg_distill.py --data $D --teacher $T --work $W/work --results $W/results --size 256 --seeds 0,1,2 --threads 1)
setsid python3 -m pncd train --model attention_unet --data $D --size 256 --batch 8 --epochs 30 --steps-per-epoch 100 --lesion-fraction 0.5 --seed 0 --threads 2 --out $T --resume > $W/work/logs/teacher2.log 2>&1 & tp=$!
pids=($tp)
for j in enet-alone-s0 enet-alone-s1 enet-alone-s2 mobilenetv2-alone-s0 mobilenetv2-alone-s1 mobilenetv2-alone-s2; do setsid "${G[@]}" --only $j > $W/work/logs/r2-$j.out 2>&1 & pids+=($!); done
while kill -0 $tp 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt 200 ]; do sleep 5; done
el "teacher: $(grep -c '"type": "epoch"' $T/log.jsonl) epochs"
"${G[@]}" --only none 2>&1 | grep -i "teacher"
while [ $(( $(date +%s) - T0 )) -lt 215 ]; do alive=0; for p in "${pids[@]}"; do kill -0 $p 2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 3; done
for p in "${pids[@]}"; do kill -TERM -- -$p 2>/dev/null; done; sleep 2
el "rows: $(ls $W/work/rows | tr '\n' ' ')"
"${G[@]}" --tables-only 2>&1 | tail -1
for f in $W/work/logs/r2-*.out; do grep -H "test Dice" $f | tail -1; done
mkdir -p $W/pack2/teacher; cp $T/{config.json,log.jsonl,best.safetensors} $W/pack2/teacher/; cp -r $W/results $W/work/rows $W/work/logs $W/pack2/
for r in $W/work/runs/*/; do j=$(basename $r); mkdir -p $W/pack2/runs/$j; cp $r/{config.json,log.jsonl} $W/pack2/runs/$j/ 2>/dev/null; done
tar -C $W -czf $OUTD/results2.tgz pack2; ls -la $OUTD; el end
