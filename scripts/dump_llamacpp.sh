#!/usr/bin/env bash
# Regenerate the llama.cpp side of the references: GGUF conversions of the
# fixtures and llama.cpp traces on the transformers traces' tokens.
#
#   scripts/dump_llamacpp.sh [FIXTURE ...]     (default: the example and every fixture present)
#
# Env: PY   python with torch/transformers/numpy/yaml (default /work/pyenv/bin/python)
#      TREE llama.cpp tree built by scripts/build_llamacpp.sh (built on demand)
#      SHARED directory holding examples/qwen3-1layer{,-hf-f32} (default ../shared)
# Writes (and nothing else):
#   fixtures/examples/qwen3-1layer.f32.gguf, reference/examples/qwen3-1layer/llamacpp-f32/
#   fixtures/<f>/gguf/<f>.{f32,f16,bf16,q8_0}.gguf   (+ q4_k_m, q6_k for llama-wide)
#   reference/<f>/llamacpp-f32-long/    f32 GGUF, f32 KV cache, flash attention off, 2 threads
#   reference/<f>/llamacpp-q8_0-long/   q8_0 GGUF, llama.cpp defaults (f16 KV, flash attention auto)
#   reference/llama-wide/llamacpp-{q4_k_m,q6_k}-long/   defaults
# and prints scripts/compare_traces.py of llamacpp-f32-long against hf-f32-long.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/pyenv/bin/python}
TREE=${TREE:-/work/llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp}
SHARED=${SHARED:-../shared}
export TREE
if [ ! -x "$TREE/build/bin/parity-dump-llamacpp" ] || [ ! -x "$TREE/build/bin/llama-quantize" ]; then
  scripts/build_llamacpp.sh "$(dirname "$(dirname "$(dirname "$TREE")")")"
fi
# the dumper is cheap to rebuild and must match scripts/dump_llamacpp.cpp
if [ scripts/dump_llamacpp.cpp -nt "$TREE/build/bin/parity-dump-llamacpp" ]; then
  g++ -O2 -std=c++17 scripts/dump_llamacpp.cpp -I "$TREE/include" -I "$TREE/ggml/include" -L "$TREE/build/bin" \
      -lllama -lggml -lggml-base -Wl,-rpath,"$TREE/build/bin" -o "$TREE/build/bin/parity-dump-llamacpp"
fi

ALL=(llama-tiny mistral-tiny qwen2-tiny qwen3-tiny qwen3moe-tiny qwen3moe-norenorm-tiny llama-wide)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(examples "${ALL[@]}")

for f in "${TARGETS[@]}"; do
  if [ "$f" = examples ]; then
    ex=$SHARED/examples
    "$PY" scripts/convert_gguf.py "$ex/qwen3-1layer" --outtype f32 --outfile fixtures/examples/qwen3-1layer.f32.gguf
    "$PY" scripts/dump_llamacpp.py --gguf fixtures/examples/qwen3-1layer.f32.gguf --like "$ex/qwen3-1layer-hf-f32" \
      --out reference/examples/qwen3-1layer/llamacpp-f32 --kv-type f32 --flash-attn off --threads 2
    "$PY" scripts/compare_traces.py reference/examples/qwen3-1layer/llamacpp-f32 "$ex/qwen3-1layer-hf-f32"
    continue
  fi
  m=fixtures/$f r=reference/$f
  if [ ! -f "$m/config.json" ] || [ ! -f "$r/hf-f32-long/trace.yaml" ]; then
    echo "skip $f: no fixture or no $r/hf-f32-long yet" >&2
    continue
  fi
  types=(f32 f16 bf16 q8_0)
  [ "$f" = llama-wide ] && types+=(q4_k_m q6_k)
  for t in "${types[@]}"; do
    case $t in
      q4_k_m|q6_k) "$PY" scripts/convert_gguf.py "$m" --outtype $t --from "$m/gguf/$f.f32.gguf" --outfile "$m/gguf/$f.$t.gguf" ;;
      *)           "$PY" scripts/convert_gguf.py "$m" --outtype $t --outfile "$m/gguf/$f.$t.gguf" ;;
    esac
  done
  "$PY" scripts/dump_llamacpp.py --gguf "$m/gguf/$f.f32.gguf" --like "$r/hf-f32-long" --out "$r/llamacpp-f32-long" \
    --kv-type f32 --flash-attn off --threads 2
  quants=(q8_0)
  [ "$f" = llama-wide ] && quants+=(q4_k_m q6_k)
  for q in "${quants[@]}"; do
    "$PY" scripts/dump_llamacpp.py --gguf "$m/gguf/$f.$q.gguf" --like "$r/hf-f32-long" --out "$r/llamacpp-$q-long" --threads 2
  done
  echo "== $f: llamacpp-f32-long vs hf-f32-long"
  "$PY" scripts/compare_traces.py "$r/llamacpp-f32-long" "$r/hf-f32-long"
done
