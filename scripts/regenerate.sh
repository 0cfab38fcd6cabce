#!/usr/bin/env bash
# Rebuild every conversion and reference from the committed fixture weights.
#   scripts/regenerate.sh [FIXTURE ...]      (default: all)
# Needs: Python 3.11 with scripts/requirements.txt (a venv outside the repo;
# torch from PyPI is several GB), cmake and a C++ compiler for llama.cpp.
# Env: PY (python of that venv), TREE (llama.cpp tree; scripts/build_llamacpp.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/lead/venv/bin/python}
TREE=${TREE:-/work/lead/src/llama_cpp_python-0.3.36/vendor/llama.cpp}
if [ ! -x "$PY" ]; then
  python3 -m venv "$(dirname "$(dirname "$PY")")"
  "$PY" -m pip install -q -r scripts/requirements.txt
fi
[ -x "$TREE/build/bin/parity-dump-llamacpp" ] || scripts/build_llamacpp.sh "$(dirname "$(dirname "$(dirname "$TREE")")")"
FIXTURES=("$@")
[ ${#FIXTURES[@]} -gt 0 ] || FIXTURES=(llama-tiny mistral-tiny qwen2-tiny qwen3-tiny qwen3moe-tiny qwen3moe-norenorm-tiny llama-wide)

# The shared example: its GGUF and llama.cpp reference.
"$PY" scripts/convert_gguf.py --llama-cpp "$TREE" ../shared/examples/qwen3-1layer --outtype f32 --outfile fixtures/examples/qwen3-1layer.f32.gguf
"$PY" scripts/dump_llamacpp.py --tree "$TREE" --gguf fixtures/examples/qwen3-1layer.f32.gguf \
  --like ../shared/examples/qwen3-1layer-hf-f32 --out reference/examples/qwen3-1layer/llamacpp-f32 --kv-type f32 --flash-attn off

for f in "${FIXTURES[@]}"; do
  m=fixtures/$f
  r=reference/$f
  for p in long chat; do
    for dt in f32 bf16; do
      "$PY" scripts/dump_hf.py --model "$m" --prompt $p --dtype $dt --out "$r/hf-$dt-$p"
    done
  done
  mkdir -p "$m/gguf"
  for t in f32 f16 bf16 q8_0; do
    "$PY" scripts/convert_gguf.py --llama-cpp "$TREE" "$m" --outtype $t --outfile "$m/gguf/$f.$t.gguf"
  done
  # llama.cpp: f32 GGUF with an f32 KV cache and flash attention off, and q8_0 with llama.cpp's defaults.
  "$PY" scripts/dump_llamacpp.py --tree "$TREE" --gguf "$m/gguf/$f.f32.gguf" --like "$r/hf-f32-long" --out "$r/llamacpp-f32-long" --kv-type f32 --flash-attn off
  "$PY" scripts/dump_llamacpp.py --tree "$TREE" --gguf "$m/gguf/$f.q8_0.gguf" --like "$r/hf-f32-long" --out "$r/llamacpp-q8_0-long"
  if [ "$f" = llama-wide ]; then
    for q in Q4_K_M Q6_K; do
      lq=$(echo $q | tr A-Z a-z)
      "$TREE/build/bin/llama-quantize" "$m/gguf/$f.f32.gguf" "$m/gguf/$f.$lq.gguf" $q >/dev/null 2>&1
      "$PY" scripts/dump_llamacpp.py --tree "$TREE" --gguf "$m/gguf/$f.$lq.gguf" --like "$r/hf-f32-long" --out "$r/llamacpp-$lq-long"
    done
    "$PY" scripts/dump_hf.py --model "$m" --prompt long --layers 1 --out "$r/hf-f32-long-L1"
  fi
done
"$PY" scripts/gguf_golden.py
"$PY" scripts/rope_golden.py
gcc -O2 scripts/rope_golden_ggml.c -I "$TREE/ggml/include" -L "$TREE/build/bin" -lggml -lggml-base -lggml-cpu \
  -Wl,-rpath,"$TREE/build/bin" -lm -o /tmp/parity-rope-golden-ggml && /tmp/parity-rope-golden-ggml tests/data/rope/ggml
# Mutants planted inside transformers (bisect's proof set), on the chat references' tokens.
for mt in "qwen3-tiny norm_rope" "qwen3-tiny theta_1e4" "qwen3-tiny eps_outside" "qwen3moe-tiny no_qk_norm" "qwen3moe-tiny no_renorm"; do
  set -- $mt
  [ -d "reference/$1/hf-f32-chat" ] && "$PY" scripts/dump_hf.py --model "fixtures/$1" --prompt chat --like "reference/$1/hf-f32-chat" --mutate "$2" --out "reference/mutants/$1-$2"
done
"$PY" scripts/make_contracts.py
echo "regenerated: ${FIXTURES[*]}"
