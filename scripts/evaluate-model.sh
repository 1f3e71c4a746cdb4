#!/usr/bin/env bash
# The model card's evaluation of a trained run, two processes at a time (one per core), then the card:
#   npm run model:evaluate -- model/.runs/full7/bundle model/.runs/full7
# 500 held-out scenes per family (100 with the training wordings), then 200 drawn by the other
# renderer. Writes BUNDLE/MODEL_CARD.md, with BUNDLE/card/training.md in it if present.
set -euo pipefail
bundle=${1:?usage: evaluate-model.sh BUNDLE RUN_DIR}
run=${2:?usage: evaluate-model.sh BUNDLE RUN_DIR}
export OPENBLAS_NUM_THREADS=1 PYTHONPATH=.
logs="$run/eval-logs"
mkdir -p "$logs"

# evaluate PART FAMILIES [options]: one part of the card, logged to $logs/PART.log, in the background.
evaluate() {
  /usr/bin/python3 -u -m model.nano.evaluate --bundle "$bundle" --out "$run" --part "$1" --families "$2" \
    "${@:3}" >"$logs/$1.log" 2>&1 &
}

evaluate a questions,region,detection,segmentation --scenes 500 --train-scenes 100
evaluate b grounding,pose,generation,editing --scenes 500 --train-scenes 100
wait -n && wait -n
evaluate o1 questions,region,detection --renderer other --scenes 200
evaluate o2 segmentation,grounding,pose --renderer other --scenes 200
wait -n && wait -n
/usr/bin/python3 -m model.nano.evaluate --bundle "$bundle" --out "$run" --merge
echo "card: $bundle/MODEL_CARD.md"
