#!/bin/bash
# One device call (a borrowed GPU machine): pncd's CUDA paths on the built-in synthetic data set,
# and ONNX Runtime INT8 on that machine's CPU (another x86 kind than the project's).
#
#   run from the repository root; wheels for packages the machine lacks in .whl/ (nibabel,
#   onnxconverter-common, polygraphy); OpenVINO is not carried (its wheel alone is over the
#   transfer limit), so its paths are not checked here.
#
# Writes $OUT/session.log (everything), $OUT/check.json (one line per step: name, exit status,
# seconds) and $OUT/pytest.log.
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s)
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
PY=${PY:-python3}
DEADLINE=${DEADLINE:-420}  # seconds: steps that would start later are skipped
W=/tmp/devcheck; rm -rf "$W"; mkdir -p "$W/s"
exec > >(tee "$OUTD/session.log") 2>&1
[ -d .whl ] && { $PY -m pip install -q --no-index --no-deps --no-compile --target "$W/site" .whl/*.whl || echo "pip failed"; }
# a copy of the checkout with the package laid out as the wheel does (pyproject's package-dir:
# export/, bench/ and targets/ are pncd.export, pncd.bench, pncd.targets); tests and paths as here
mkdir -p "$W/repo" && cp -r pncd tests bench export targets pyproject.toml "$W/repo/" \
  && cp -r export bench targets "$W/repo/pncd/" && cd "$W/repo" || exit 1
export PYTHONPATH=$W/repo:$W/site
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores;" \
  "$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_tile|amx_int8|amx_bf16)$' | tr '\n' ' ')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, numpy, onnx, onnxruntime; from pncd.targets.cpu import isa_summary, has_vnni; print('python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'onnx', onnx.__version__, 'ort', onnxruntime.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0)); print('isa', isa_summary(), 'vnni', has_vnni())"

S=$W/s
echo -n > "$OUTD/check.json"
step() {  # step NAME EXPECTED_RC CMD...: run, log, record
  local name=$1 want=$2; shift 2
  local now=$(( $(date +%s) - T0 ))
  if [ "$now" -gt "$DEADLINE" ]; then echo "SKIP $name (deadline)"; echo "{\"step\": \"$name\", \"skipped\": true}" >> "$OUTD/check.json"; return; fi
  echo "[t=${now}s] STEP $name: $*"
  local t=$(date +%s); "$@" > "$S/$name.log" 2>&1; local rc=$?
  local dt=$(( $(date +%s) - t ))
  echo "STEP $name rc=$rc (want $want) ${dt}s :: $(tr '\r' '\n' < "$S/$name.log" | grep -v '^\s*$' | tail -n 2 | tr '\n' ' ' | cut -c1-400)"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"expected\": $want, \"seconds\": $dt}" >> "$OUTD/check.json"
}
P=($PY -m pncd.cli)
# the demo's recipe (pncd demo's defaults), trained on the GPU
step teacher 0 "${P[@]}" train --model attention_unet --size 64 --epochs 12 --steps-per-epoch 50 --lr 0.002 --out "$S/t" --device cuda
step distill 0 "${P[@]}" distill --teacher "$S/t" --student enet --size 64 --epochs 20 --steps-per-epoch 50 --lr 0.005 --out "$S/d" --device cuda
# a second writer of the same run is refused while the first holds its lock
"${P[@]}" distill --teacher "$S/t" --student enet --size 64 --epochs 50 --steps-per-epoch 50 --out "$S/lock" --device cuda > "$S/lock-first.log" 2>&1 &
FIRST=$!
for _ in $(seq 60); do grep -q "epoch 1/" "$S/lock-first.log" 2>/dev/null && break; sleep 1; done
step lock_second 2 "${P[@]}" distill --teacher "$S/t" --student enet --size 64 --epochs 50 --steps-per-epoch 50 --out "$S/lock" --device cuda
kill $FIRST; wait $FIRST; echo "lock: the first writer was still running when the second was refused (stopped now, rc=$?)"
step resume_a 0 "${P[@]}" train --model enet --size 64 --epochs 2 --steps-per-epoch 20 --out "$S/r" --device cuda
step resume_b 0 "${P[@]}" train --model enet --size 64 --epochs 4 --steps-per-epoch 20 --out "$S/r" --device cuda --resume
step ddp_distill 0 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m pncd.cli distill --teacher "$S/t" --student enet --size 64 --epochs 2 --steps-per-epoch 20 --out "$S/ddp" --device cuda
step eval 0 "${P[@]}" eval "$S/d" --split test --device cuda --overlays 2
step export_ort_int8 0 "${P[@]}" export "$S/d" --target onnxruntime --precision int8 --out "$S/x-int8"
step export_ort_fp32 0 "${P[@]}" export "$S/d" --target onnxruntime --precision fp32 --out "$S/x-fp32"
step bench_cpu 0 "${P[@]}" bench "$S/x-fp32" "$S/x-int8" --split test --iters 30 --threads 4 --out "$S/b"
# the committed CI checkpoint's ONNX Runtime INT8 export against the committed baseline, on this CPU
step gate_export 0 "${P[@]}" export bench/results/ci-gate/enet-pncd --target onnxruntime --precision int8 --out "$S/g-int8"
step gate_bench 0 "${P[@]}" bench "$S/g-int8" --split test --iters 10 --n-boot 200 --overlays 0 --threads 1 --out "$S/gb"
step gate 0 "${P[@]}" gate "$S/gb/report.json" --baseline bench/baselines/ci-synthetic.json --allow-missing --min-ref-ratio 0.97
cp "$S/b/report.md" "$OUTD/bench-report.md" 2>/dev/null
cp "$S/gb/report.json" "$OUTD/gate-report.json" 2>/dev/null
for f in "$S"/d/log.jsonl "$S"/t/log.jsonl; do echo "$f: $(tail -n 1 "$f" | cut -c1-400)"; done
cat "$S"/d/eval-test/metrics.json 2>/dev/null | head -c 600; echo
# the tests with CUDA branches, and the INT8 export tests, on this machine (OpenVINO's are deselected)
now=$(( $(date +%s) - T0 ))
if [ "$now" -lt "$DEADLINE" ]; then
  timeout $(( DEADLINE + 120 - now )) $PY -m pytest -q -p no:cacheprovider -n 8 -o addopts="" -m "not slow and not ssh" \
    tests/export/test_export_cli.py tests/export/test_sensitivity.py tests/bench/test_bench_e2e.py \
    tests/targets/test_trt.py tests/distill/test_teacher_runtime.py -k "not openvino" > "$OUTD/pytest.log" 2>&1
  echo "pytest rc=$? :: $(tail -n 3 "$OUTD/pytest.log" | tr '\n' ' ')"
fi
echo "done in $(( $(date +%s) - T0 ))s"
