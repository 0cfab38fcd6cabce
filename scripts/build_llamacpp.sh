#!/usr/bin/env bash
# Build llama.cpp as shipped inside the llama-cpp-python 0.3.36 source archive,
# OUTSIDE the repository, and our node dumper (scripts/dump_llamacpp.cpp)
# against that tree's `llama` and `ggml` libraries. Nothing built or unpacked
# here is ever committed.
#
#   scripts/build_llamacpp.sh [DIR]        (default /work/llama-src)
#
# Result: DIR/llama_cpp_python-0.3.36/vendor/llama.cpp (the tree, "TREE"), with
#   TREE/build/bin/{llama-quantize,llama-bench,llama-eval-callback}
#   TREE/build/bin/parity-dump-llamacpp
# About ten minutes on 2 cores. Prints TREE on the last line.
set -euo pipefail
DIR=${1:-/work/llama-src}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
DIR=$(realpath -m "$DIR")
case "$DIR/" in "$REPO"/*) echo "refusing to build inside the repository ($DIR)" >&2; exit 2;; esac
mkdir -p "$DIR"
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
cd "$DIR"
if [ ! -f llama_cpp_python-0.3.36.tar.gz ]; then
  python3 -m pip install -q scikit-build-core >/dev/null 2>&1 || true
  python3 -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d .
fi
[ -d llama_cpp_python-0.3.36 ] || tar xzf llama_cpp_python-0.3.36.tar.gz
TREE="$DIR/llama_cpp_python-0.3.36/vendor/llama.cpp"
cd "$TREE"
# Native build (AVX-512, VNNI where the CPU has them) but without AMX: on this
# project's virtual machines with AMX-capable Xeons (2026-12-01), the CPU
# advertises AMX and the kernel grants it, yet ggml's AMX matmul dies with
# SIGILL at its first `tilezero`. parity has no AMX kernels either.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" >/dev/null
cmake --build build -j"${JOBS:-2}" --target llama llama-quantize llama-bench llama-eval-callback >/dev/null
g++ -O2 -std=c++17 "$HERE/dump_llamacpp.cpp" -I include -I ggml/include \
    -L build/bin -lllama -lggml -lggml-base -Wl,-rpath,"$TREE/build/bin" \
    -o build/bin/parity-dump-llamacpp
echo "$TREE"
