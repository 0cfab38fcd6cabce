#!/usr/bin/env bash
# Build the llama.cpp tree shipped in the llama-cpp-python 0.3.36 source archive
# (outside the repo), and our node dumper against it. Nothing built here is
# committed. Usage: scripts/build_llamacpp.sh [DIR]   (default /work/lead/src)
set -euo pipefail
DIR=${1:-/work/lead/src}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR" && cd "$DIR"
command -v cmake >/dev/null || (apt-get update -qq && apt-get install -y -qq cmake)
[ -f llama_cpp_python-0.3.36.tar.gz ] || pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d .
[ -d llama_cpp_python-0.3.36 ] || tar xzf llama_cpp_python-0.3.36.tar.gz
LL="$DIR/llama_cpp_python-0.3.36/vendor/llama.cpp"
cd "$LL"
cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON >/dev/null
cmake --build build -j2 --target llama llama-eval-callback llama-quantize llama-bench
g++ -O2 -std=c++17 "$HERE/dump_llamacpp.cpp" -I include -I ggml/include -L build/bin -lllama -lggml -lggml-base \
    -Wl,-rpath,"$LL/build/bin" -o build/bin/parity-dump-llamacpp
echo "$LL"
