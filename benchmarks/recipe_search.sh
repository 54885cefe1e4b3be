#!/usr/bin/env bash
# Reruns one run of the default-recipe search in docs/benchmarks.md:
#   bash benchmarks/recipe_search.sh J [extra python -m tfseg.train arguments]
# Each run starts from the frozen benchmarks/search_base.yaml; its foreground IoU is in
# runs/search-<RUN>/metrics.json. All rows share the held-out set below.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: recipe_search.sh RUN (F G H J K2 L M N O P Q R S V) [extra args]}
shift
common=(--config benchmarks/search_base.yaml --run-dir "runs/search-$run" --set data.shuffle_frames=64
        --set data.val_sequences=16 --set data.val_frame_stride=4)
no_export=(--set export.saved_model=false --set export.onnx=false)
size() { echo --set data.height=$1 --set data.width=$1 --set data.synthetic.height=$1 \
              --set data.synthetic.width=$1; }
boxes=(--set "data.synthetic.sample_size=[0.12,0.3]" --set "train.class_weights=[1,3]")
raw=(--set data.preprocess.background_every=0 --set "data.mean=[115.0]" --set "data.std=[50.0]")
small=($(size 128) "${boxes[@]}" --set data.synthetic.fringes=16)   # 128x128 frames
fast=("${small[@]}" "${raw[@]}" --set train.mixed_precision=mixed_bfloat16)
case $run in
  F)  args=("${no_export[@]}" $(size 192) "${boxes[@]}" --set train.steps_per_epoch=70) ;;
  G)  args=("${no_export[@]}" $(size 192) "${boxes[@]}" --set train.steps_per_epoch=100
            --set train.mixed_precision=mixed_bfloat16) ;;
  H)  args=("${no_export[@]}" "${small[@]}" --set train.steps_per_epoch=150) ;;
  J)  args=("${no_export[@]}" "${small[@]}" "${raw[@]}" --set train.steps_per_epoch=150) ;;
  K2) args=("${no_export[@]}" "${fast[@]}" --set train.steps_per_epoch=500) ;;
  L)  args=("${fast[@]}" --set train.epochs=5 --set train.steps_per_epoch=200
            --set train.learning_rate=2e-3 --set train.warmup_steps=50) ;;
  M)  args=($(size 96) "${boxes[@]}" --set data.synthetic.fringes=12 "${raw[@]}"
            --set train.mixed_precision=mixed_bfloat16 --set train.epochs=6
            --set train.steps_per_epoch=300 --set train.learning_rate=2e-3
            --set train.warmup_steps=100) ;;
  N)  args=("${fast[@]}" --set train.epochs=5 --set train.steps_per_epoch=150
            --set train.batch_size=16 --set train.learning_rate=3e-3 --set train.warmup_steps=50) ;;
  O)  args=("${fast[@]}" --set "train.class_weights=[]" --set train.epochs=5
            --set train.steps_per_epoch=200 --set train.learning_rate=2e-3
            --set train.warmup_steps=50 --set train.dice_weight=1.0) ;;
  P)  args=("${fast[@]}" --set train.epochs=5 --set train.steps_per_epoch=220) ;;
  Q)  args=("${fast[@]}" --set train.epochs=5 --set train.steps_per_epoch=200
            --set train.learning_rate=4e-3 --set train.warmup_steps=100) ;;
  R)  args=("${fast[@]}" --set train.epochs=5 --set train.steps_per_epoch=300
            --set train.learning_rate=4e-3 --set train.warmup_steps=100) ;;
  S)  args=("${fast[@]}" --set train.epochs=5 --set train.steps_per_epoch=200
            --set train.learning_rate=4e-3 --set train.warmup_steps=100
            --set data.shuffle_frames=1024) ;;
  V)  args=("${fast[@]}" --set model.name=icnet --set "model.options={width: 0.5}"
            --set train.epochs=5 --set train.steps_per_epoch=400
            --set train.learning_rate=4e-3 --set train.warmup_steps=100) ;;
  *)  echo "unknown run $run" >&2; exit 2 ;;
esac
exec python -m tfseg.train "${common[@]}" "${args[@]}" "$@"
