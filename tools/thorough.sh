#!/usr/bin/env bash
# The thorough run: the property and hardening suites with at least 1,000 generated cases per public entry point
# (the layers, HMANet, upscale, load_hmanet, the command line, imresize), random seed printed.
#   bash tools/thorough.sh          # a new random seed
#   bash tools/thorough.sh 12345    # the same cases again
# PROFILE=dev (or ci) runs fewer cases, as a smoke test of the script.
# Prints each property's number of passing / failing cases and the wall time; exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
seed=${1:-$((RANDOM * 32768 + RANDOM))}
echo "thorough run: hypothesis seed $seed (rerun: bash tools/thorough.sh $seed)"
start=$SECONDS
tests=(
  "tests/test_hardening.py::test_layers_answer_or_refuse_any_tensor"          # every layer: any tensor
  "tests/test_layers_reference.py::test_window_attention_matches_reference[sdpa]"   # float64 references
  "tests/test_layers_reference.py::test_grid_attention_matches_reference[True-sdpa]"
  "tests/test_hardening.py::test_hmanet_answers_or_refuses_any_tensor"        # HMANet
  "tests/test_hardening.py::test_upscale_answers_or_refuses_any_array"        # upscale
  "tests/test_checkpoint_files.py::test_damaged_files_are_refused_or_load_a_finite_model"  # load_hmanet
  "tests/test_cli_oracle.py::test_command_lines_against_the_oracle"          # the command line
  "tests/test_imresize_metrics.py::test_imresize_matches_pixel_loop_and_torch_matches_numpy"  # imresize
)
HYPOTHESIS_PROFILE=${PROFILE:-thorough} python -m pytest -p no:cacheprovider -q "${tests[@]}" --hypothesis-seed="$seed" \
  --hypothesis-show-statistics 2>&1 | tee /tmp/gridattn-thorough.log \
  | grep -E "^(tests/|\s+- [0-9]+ passing|[0-9]+ (passed|failed))|Falsifying|Error" \
  | sed -E 's/^tests\//\ntests\//'
status=${PIPESTATUS[0]}
echo "wall time $((SECONDS - start)) s, seed $seed, exit status $status (full log: /tmp/gridattn-thorough.log)"
exit "$status"
