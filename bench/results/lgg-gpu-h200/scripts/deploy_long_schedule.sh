#!/bin/bash
cd /work/main
export OMP_NUM_THREADS=1
L=/work/shared/data/lgg-flair
P=.venv/bin/pncd
for r in enet-alone-s0-long enet-alone-s1-long enet-pncd-s0-long; do
  R=/work/runs/gpu-long/$r; D=/work/runs/longdeploy/$r; mkdir -p $D
  for t in openvino:fp32 openvino:fp16 openvino:int8 onnxruntime:fp32 onnxruntime:int8; do
    tg=${t%%:*}; pr=${t##*:}; o=$D/${tg}-${pr}
    [ -d $o ] || $P export $R --target $tg --precision $pr --calib-data $L --out $o 2>&1 | grep -v "━" | tail -2
  done
  [ -f $D/report/report.json ] || $P bench $D/openvino-fp32 $D/openvino-fp16 $D/openvino-int8 $D/onnxruntime-fp32 $D/onnxruntime-int8 --data $L --split test --iters 100 --threads 1 --out $D/report --force 2>&1 | grep -v "━" | tail -4
done
echo ALLDONE
