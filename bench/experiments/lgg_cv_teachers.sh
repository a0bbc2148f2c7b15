#!/usr/bin/env bash
# The fold teachers of the LGG FLAIR cross-validation (bench/results/lgg-cv): one Attention U-Net
# per fold of bench/results/lgg-cv/folds.json, each trained on its fold's train cases, best epoch
# on its val cases, scored on its held-out test cases. Resumable: kill it at any time; a run
# with its eval-test/metrics.json is done, an unfinished one continues from its last epoch.
#   DATA=path/to/lgg-flair bench/experiments/lgg_cv_teachers.sh [WORK] [FOLDS...]     (default WORK runs/lgg-cv, folds 0-4)
# DATA (required): the LGG FLAIR data set (Buda et al., The Cancer Imaging Archive / Kaggle lgg-mri-segmentation).
set -uo pipefail
if [ -z "${DATA:-}" ]; then echo "DATA=path/to/lgg-flair is required" >&2; exit 2; fi
case $DATA in /*) ;; *) DATA=$PWD/$DATA ;; esac  # relative to where it was started, not the repo root
cd "$(dirname "$0")/../.."
WORK=${1:-runs/lgg-cv}; shift || true
FOLDS=${*:-0 1 2 3 4}
PNCD=${PNCD:-.venv/bin/pncd}
FOLDS_FILE=${FOLDS_FILE:-$PWD/bench/results/lgg-cv/folds.json}
RECIPE=(--model attention_unet --size 128 --batch 8 --epochs 60 --steps-per-epoch 100 --lesion-fraction 0.5 --lr 0.001 --seed 0 --threads 1)
for f in $FOLDS; do
  out="$WORK/f$f/teacher"
  if [ -f "$out/eval-test/metrics.json" ]; then echo "fold $f: teacher done"; continue; fi
  mkdir -p "$WORK/f$f"
  if [ -f "$out/config.json" ]; then resume=(--resume); else resume=(); fi
  echo "fold $f: teacher $(date -u +%FT%TZ)"
  "$PNCD" train "${RECIPE[@]}" --data "$DATA" --folds-file "$FOLDS_FILE" --fold "$f" --out "$out" "${resume[@]}" \
    || { echo "fold $f: train failed"; continue; }
  "$PNCD" eval "$out" --split test --threads 1 || echo "fold $f: eval failed"
done
