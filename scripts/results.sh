#!/usr/bin/env bash
# Runs the measurements of docs/RESULTS.md. Slow on a CPU: run it in the background.
#
#   scripts/results.sh DATA_DIR OUT_DIR QUEUE [THREADS]
#
# DATA_DIR holds the standard test images (cset9/, sr/set5/, bm3d_gray/, denoise/, inpaint/).
# QUEUE is denoise, sr, inpaint or all. Every run writes OUT_DIR/<queue>/<image>.json (the
# summary) and .png (the result); runs whose summary exists are skipped, so an interrupted
# queue resumes. Needs Python with Pillow for the centre crops.
set -euo pipefail
data=$1 out=$2 queue=$3 threads=${4:-1}
here=$(cd "$(dirname "$0")" && pwd)
dip=${DIP:-$here/../target/release/dip}
crops=$out/crops
[ -d "$crops" ] || python3 "$here/results-prepare.py" "$data" "$crops"

run() { # name, then the dip arguments
  local json=$1.json
  shift
  [ -f "$json" ] && return 0
  "$dip" --quiet --threads "$threads" "$@" --json "$json" --force
}

denoise() {
  mkdir -p "$out/denoise"
  local d=$out/denoise
  "$dip" add-noise "$crops/f16_128.png" -o "$d/f16_128_noisy.png" --sigma 25 --seed 0 --force >/dev/null
  # The tables report fixed step budgets (the final and the best step of each), so every run
  # here says --stop fixed: the default, auto, would end the run at its own chosen step.
  run "$d/f16_128" denoise "$d/f16_128_noisy.png" --clean "$crops/f16_128.png" -o "$d/f16_128.png" \
    --stop fixed
  # 64x64 crops overfit within a few hundred steps: 600 steps, and the best step is reported.
  for f in "$crops"/cset9/*.png; do
    local s; s=$(basename "$f" .png)
    "$dip" add-noise "$f" -o "$d/${s}_noisy.png" --sigma 25 --seed 0 --force >/dev/null
    run "$d/$s" denoise "$d/${s}_noisy.png" --clean "$f" -o "$d/$s.png" --iters 600 --stop fixed
  done
}

sr() {
  mkdir -p "$out/sr"
  local d=$out/sr
  for set in set5 set14; do
    for f in "$crops/$set"/*.png; do
      local s; s=$set-$(basename "$f" .png)
      "$dip" degrade "$f" --task sr --factor 4 -o "$d/${s}_lr.png" --force >/dev/null
      run "$d/$s" sr "$d/${s}_lr.png" --factor 4 --clean "$f" -o "$d/$s.png" --stop fixed
    done
  done
}

inpaint() {
  mkdir -p "$out/inpaint"
  local d=$out/inpaint
  run "$d/kate_128" inpaint "$crops/kate_128.png" --mask "$crops/kate_mask_128.png" \
    --clean "$crops/kate_128.png" -o "$d/kate_128.png" --stop fixed
  for f in "$crops"/gray/{Cameraman256,house,peppers256,montage,barbara,boat,Lena512,man,couple,hill,fingerprint}.png; do
    local s; s=$(basename "$f" .png)
    run "$d/$s" inpaint "$f" --random-mask 0.5 --mask-seed 0 -o "$d/$s.png" --stop fixed
  done
}

case $queue in
  denoise) denoise ;;
  sr) sr ;;
  inpaint) inpaint ;;
  all) denoise; sr; inpaint ;;
  *) echo "unknown queue '$queue' (denoise, sr, inpaint or all)" >&2; exit 2 ;;
esac
