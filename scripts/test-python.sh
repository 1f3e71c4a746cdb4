#!/usr/bin/env bash
# Format check, lint and unit tests of the model code (model/), with Debian's Python and PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch, numpy, scipy, PIL, pyflakes, pycodestyle, jinja2, jsonschema, tqdm" 2>/dev/null \
  || ! command -v black >/dev/null; then
  echo "The model's Python checks need Debian's packages; install them with:" >&2
  echo "  sudo apt-get install -y python3-torch python3-numpy python3-scipy python3-pil python3-pyflakes python3-pycodestyle black python3-jinja2 python3-jsonschema python3-onnx python3-matplotlib python3-tqdm libopenblas0-openmp" >&2
  exit 1
fi
black --check --quiet model || { echo "model/ is not formatted: run 'black model'" >&2; exit 1; }
/usr/bin/python3 -m pycodestyle model
/usr/bin/python3 -m pyflakes model
/usr/bin/python3 -m unittest discover -s model/tests -t .
