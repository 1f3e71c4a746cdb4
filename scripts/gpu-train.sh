#!/usr/bin/env bash
# The nano recipe on a GPU, for a session lent a GPU machine (see the device tool): the smoke
# configuration on cuda first (a minute; shows the device path works end to end), then the recipe
# with the minutes given, exported to OUT/bundle without evaluation (run `npm run model:evaluate --
# OUT/bundle OUT` on the CPU afterwards). Not yet run on a GPU: no session has been lent one.
#   bash scripts/gpu-train.sh OUT_DIR [language minutes] [stages 1-3 minutes] [stage 4 minutes]
# The defaults fit one 10-minute device command. The GPU image's python3 holds torch 2; the export
# also needs onnx and jsonschema there (carry wheels if missing, as the device tool's README says).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu-train.sh OUT_DIR [language minutes] [stages 1-3 minutes] [stage 4 minutes]}
export OPENBLAS_NUM_THREADS=1 PYTHONPATH=. PYTHONUNBUFFERED=1
python3 -m model.nano.pipeline --config smoke --out "$out/smoke" --device cuda
python3 -m model.nano.pipeline --device cuda --threads 8 --out "$out" --bundle "$out/bundle" --eval-scenes 0 \
  --language-minutes "${2:-1}" --minutes "${3:-4}" --instruction-minutes "${4:-2.5}"
