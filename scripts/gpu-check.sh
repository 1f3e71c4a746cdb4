#!/usr/bin/env bash
# The WebGPU provider on a real GPU (for a session lent a GPU machine; see the device tool):
# prints the adapter, runs the golden tests on webgpu, then the decode benchmark on webgpu.
# Without a GPU it uses Dawn's OpenGL ES backend on Mesa (software), which is slow but correct.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  export WEBGPU_BACKEND="${WEBGPU_BACKEND:-vulkan}"
else
  export EGL_PLATFORM=surfaceless WEBGPU_BACKEND="${WEBGPU_BACKEND:-opengles}" WEBGPU_FEATURE_LEVEL="${WEBGPU_FEATURE_LEVEL:-compatibility}"
fi
node --import tsx -e '
  const { installNodeWebGPU } = await import("./gpu-runner/src/backend/onnx.ts");
  console.log(await installNodeWebGPU());
'
GOLDEN_PROVIDERS=webgpu npx vitest run gpu-runner/test/golden.test.ts --reporter=verbose
npx tsx bench/run.ts --provider webgpu --quick --skip-edge
