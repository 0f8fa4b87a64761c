#!/usr/bin/env bash
# All GPU checks in one call, for a short lease on one card (H100/H200):
# the CUDA tests, then bench/gpu_decode.py per weight format (each prints its own table, so a
# timeout loses one format, not all), the serving bench, then bench/apar.py. Logs go to $OUT (or ./gpu-out).
#
#   bash bench/gpu_session.sh                 # every step, about 10 minutes on an H200
#   bash bench/gpu_session.sh tests apar      # only the steps named
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$out/gpu.txt"

wanted=" $* "
step() {  # step NAME SECONDS CMD...: run with a time limit, keep the log, never stop the script
  local name=$1 limit=$2; shift 2
  [[ "$wanted" == "  " || "$wanted" == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name exit ${PIPESTATUS[0]}"
}

# The CUDA tests need only torch and pytest; --noconftest skips fixtures for sandbox/browser tests.
step tests 90 env PYTHONPATH="$PYTHONPATH:tests/engine" python3 -m pytest --noconftest -p no:cacheprovider -q \
  tests/engine/test_cuda_graphs.py tests/engine/test_quant_gpu.py "tests/engine/test_engine.py::test_cuda_matches_cpu"
step decode_bf16 150 python3 bench/gpu_decode.py --weights bf16 --modes graph,eager
step decode_int4 90 python3 bench/gpu_decode.py --weights int4 --no-hf
step decode_int8 60 python3 bench/gpu_decode.py --weights int8 --no-hf --batches 1,16
step serve 150 python3 bench/gpu_serve.py --weights bf16
step apar 200 python3 bench/apar.py --items 4,16 --repeat 1
