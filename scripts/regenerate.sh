#!/usr/bin/env bash
# Rebuild every reference (and the llama.cpp conversions) from the committed
# fixture weights, with one command:
#
#   scripts/regenerate.sh [FIXTURE ...]       (default: every fixture)
#
# Env: PY      python of the venv (default /work/pyenv/bin/python; created from
#              scripts/requirements.txt when missing: torch from PyPI is several GB)
#      HF_ONLY=1  skip the llama.cpp side (the hook below) and the ggml RoPE goldens
#      TREE    llama.cpp tree (scripts/dump_llamacpp.sh's default when unset)
#
# Training is not part of this: the committed weights are the source of truth
# (scripts/make_fixtures.py made them; scripts/make_tokenizer.py --check says
# whether the tokenizer is still reproduced). Everything below is deterministic
# on one machine: a re-run leaves `git status` clean.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/pyenv/bin/python}
if [ ! -x "$PY" ]; then
  venv=$(dirname "$(dirname "$PY")")
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r scripts/requirements.txt
  touch "$venv/.ready"
fi
ALL=(llama-tiny mistral-tiny qwen2-tiny qwen3-tiny qwen3moe-tiny qwen3moe-norenorm-tiny llama-wide)
FIXTURES=("$@")
[ ${#FIXTURES[@]} -gt 0 ] || FIXTURES=("${ALL[@]}")

"$PY" scripts/make_tokenizer.py --check || echo "note: the committed tokenizer is kept (it is the one the weights were trained with)" >&2

# ---- transformers references -------------------------------------------------
for f in "${FIXTURES[@]}"; do
  m=fixtures/$f
  r=reference/$f
  for p in long chat; do
    for dt in f32 bf16; do
      "$PY" scripts/dump_hf.py --model "$m" --prompt $p --dtype $dt --out "$r/hf-$dt-$p"
    done
  done
  case $f in
    qwen3-tiny)  # float16 for one prompt of one fixture
      "$PY" scripts/dump_hf.py --model "$m" --prompt long --dtype f16 --out "$r/hf-f16-long" ;;
    llama-wide)  # partial depth: first layer only, on the full trace's tokens and batches
      "$PY" scripts/dump_hf.py --model "$m" --prompt long --layers 1 --like "$r/hf-f32-long" --out "$r/hf-f32-long-L1" ;;
  esac
done
# Bugs planted inside transformers (bisect's proof set), on the chat references' tokens.
for mt in "qwen3-tiny norm_rope" "qwen3-tiny theta_1e4" "qwen3-tiny eps_outside" "qwen3moe-tiny no_qk_norm" "qwen3moe-tiny no_renorm"; do
  set -- $mt
  [ -d "reference/$1/hf-f32-chat" ] && "$PY" scripts/dump_hf.py --model "fixtures/$1" --prompt chat \
    --like "reference/$1/hf-f32-chat" --mutate "$2" --out "reference/mutants/$1-$2"
done
# RoPE goldens from transformers' own code (tests/data/rope/hf and reference/golden/rope).
"$PY" scripts/rope_golden.py
"$PY" scripts/gguf_golden.py

# ---- llama.cpp side: HOOK -> scripts/dump_llamacpp.sh ------------------------
# GGUF conversions (fixtures/<f>/gguf/) and llama.cpp traces (reference/<f>/llamacpp-*)
# are made by scripts/dump_llamacpp.sh, on the transformers traces' tokens written above.
if [ "${HF_ONLY:-0}" != 1 ]; then
  PY="$PY" scripts/dump_llamacpp.sh examples "${FIXTURES[@]}"
  TREE=${TREE:-/work/llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp}
  gcc -O2 scripts/rope_golden_ggml.c -I "$TREE/ggml/include" -L "$TREE/build/bin" -lggml -lggml-base -lggml-cpu \
    -Wl,-rpath,"$TREE/build/bin" -lm -o /tmp/parity-rope-golden-ggml && /tmp/parity-rope-golden-ggml tests/data/rope/ggml
fi
# ------------------------------------------------------------------------------

"$PY" scripts/make_contracts.py
echo "regenerated: ${FIXTURES[*]}"
