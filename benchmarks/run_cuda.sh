#!/usr/bin/env bash
# Every CUDA check, for a lent GPU machine without network: bash benchmarks/run_cuda.sh [PART ...], PART one of
#   tests    the `cuda` tests (about 3 min)          kernels  attention kernels of the layers (1 min)
#   hmanet   HMANet x4 forward benchmark (5 min)      layers   layer benchmarks, float32 and bfloat16 (3 min)
#   train    the training step and its kernels (7 min) xformers xformers' info and tests, if installed (3 min)
# default: all of them (more than one 15-minute device session: pick parts). Results go to ${OUT:-cuda-results}/.
# The official model is benchmarked when REFERENCE points at a checkout of korouuuuu/HMA.
set -o pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
out=${OUT:-cuda-results}
mkdir -p "$out"
python=${PYTHON:-python3}
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests kernels hmanet layers train xformers)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for part in "${parts[@]}"; do
  case $part in
    tests)
      timeout 200 $python -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$out/cuda_tests.log" | tail -15 ;;
    kernels)
      timeout 60 $python benchmarks/cuda_kernels.py 2>&1 | tee "$out/kernels.md" ;;
    hmanet)
      reference=()
      [ -n "$REFERENCE" ] && reference=(--reference "$REFERENCE" --variants official fp32 tf32 bf16 math)
      timeout 300 $python benchmarks/hmanet_speed.py --device cuda --sizes 64 128 256 --repeats 5 "${reference[@]}" 2>&1 | tee "$out/hmanet_cuda.md" ;;
    layers)
      timeout 90 $python benchmarks/layer_speed.py --device cuda --repeats 10 2>&1 | tee "$out/layers_cuda_float32.md"
      timeout 90 $python benchmarks/layer_speed.py --device cuda --dtype bfloat16 --repeats 10 2>&1 | tee "$out/layers_cuda_bfloat16.md" ;;
    train)  # the official x4 at LR 64, batch 4, and the attention kernels of its forward and backward
      train=(--variants fp32 tf32 bf16 bf16+compile)
      [ -n "$REFERENCE" ] && train=(--reference "$REFERENCE" --variants official fp32 tf32 bf16 bf16+compile)
      timeout 400 $python benchmarks/train_speed.py --device cuda --repeats 10 --kernels "${train[@]}" 2>&1 | tee "$out/train_cuda.md" ;;
    xformers)  # when its wheel was installed beside this torch: do its kernels load, do the backend tests pass
      if $python -c "import xformers" 2>/dev/null; then
        timeout 60 $python -m xformers.info 2>&1 | tee "$out/xformers_info.txt" | head -30
        timeout 120 $python -m pytest -q -m cuda tests/test_cuda.py -k xformers -p no:cacheprovider 2>&1 | tee "$out/xformers_tests.log" | tail -5
      else
        echo "xformers is not installed"
      fi ;;
    *) echo "unknown part $part (tests kernels hmanet layers train xformers)"; exit 2 ;;
  esac
done
