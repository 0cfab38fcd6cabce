#!/usr/bin/env python3
"""Run llama.cpp's own convert_hf_to_gguf.py on one of our models.

Our fixtures use a small byte-level BPE tokenizer of our own, whose
pre-tokenizer hash llama.cpp does not know, so the converter refuses it. This
wrapper imports the converter from the llama.cpp tree (unmodified) and tells it
to assume a known pre-tokenizer (default "qwen2", a byte-level BPE with the
same split regex family), then runs its main() with the remaining arguments.

    python scripts/convert_gguf.py --llama-cpp DIR [--pre qwen2] MODEL_DIR --outtype f32 --outfile OUT.gguf
"""
import argparse
import sys


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree (vendor/llama.cpp of llama-cpp-python 0.3.36)")
    ap.add_argument("--pre", default="qwen2", help="known BPE pre-tokenizer name to assume")
    ours, rest = ap.parse_known_args()
    sys.path.insert(0, f"{ours.llama_cpp}/gguf-py")
    sys.path.insert(0, ours.llama_cpp)
    import conversion.base as base  # noqa: E402  (the tree's own converter package)
    import convert_hf_to_gguf  # noqa: E402

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: ours.pre
    sys.argv = ["convert_hf_to_gguf.py", *rest]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
