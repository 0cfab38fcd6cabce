#!/usr/bin/env python3
"""Convert one of our HF model folders to GGUF with llama.cpp's own tools.

    python scripts/convert_gguf.py MODEL_DIR --outtype f32|f16|bf16|q8_0 --outfile OUT.gguf [--tree TREE] [--pre gpt-2]
    python scripts/convert_gguf.py MODEL_DIR --outtype q4_k_m|q6_k --outfile OUT.gguf [--from F32.gguf]

f32/f16/bf16/q8_0 come from the tree's unmodified convert_hf_to_gguf.py (run
in-process with the tree's own gguf-py first on sys.path, so converter and
gguf-py match). Q4_K_M and Q6_K come from the tree's llama-quantize applied to
an f32 conversion (made on the fly into a temporary file unless --from names
one).

Our fixtures use a small byte-level BPE tokenizer of our own, whose
pre-tokenizer hash the converter does not know: it raises
NotImplementedError("BPE pre-tokenizer was not recognized"). This wrapper lets
the converter try first and only when it fails answers with a known
pre-tokenizer name (--pre, default "gpt-2": our tokenizer.json is a plain
ByteLevel pre-tokenizer with the GPT-2 split regex, which is llama.cpp's
LLAMA_VOCAB_PRE_TYPE_GPT2). The choice only affects how llama.cpp would
tokenise text; the references feed token ids and never tokenise. No llama.cpp
file is modified.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

DEFAULT_TREE = os.environ.get("TREE", "/work/llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp")
QUANTIZE = {"q4_k_m": "Q4_K_M", "q6_k": "Q6_K"}
CONVERT = {"f32", "f16", "bf16", "q8_0"}


def convert(tree, model_dir, outtype, outfile, pre):
    """Run convert_hf_to_gguf.main() in a child process (its module state and
    logging stay out of ours)."""
    code = f"""
import sys
sys.path.insert(0, {str(pathlib.Path(tree, 'gguf-py'))!r})
sys.path.insert(0, {str(tree)!r})
import conversion.base as base
import convert_hf_to_gguf
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        base.logger.warning("parity: unknown BPE pre-tokenizer; assuming %r", {pre!r})
        return {pre!r}
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = ["convert_hf_to_gguf.py", {str(model_dir)!r}, "--outtype", {outtype!r}, "--outfile", {str(outfile)!r}]
convert_hf_to_gguf.main()
"""
    env = dict(os.environ, NO_LOCAL_GGUF="1")  # we put the tree's gguf-py first ourselves
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed on {model_dir}:\n{run.stdout[-2000:]}{run.stderr[-4000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--outtype", required=True, choices=sorted(CONVERT | set(QUANTIZE)))
    ap.add_argument("--outfile", required=True)
    ap.add_argument("--tree", "--llama-cpp", dest="tree", default=DEFAULT_TREE, help="llama.cpp tree (scripts/build_llamacpp.sh)")
    ap.add_argument("--pre", default="gpt-2", help="known BPE pre-tokenizer to assume when the converter does not recognise ours")
    ap.add_argument("--from", dest="src", help="f32 GGUF to quantise (for q4_k_m / q6_k)")
    args = ap.parse_args()
    out = pathlib.Path(args.outfile).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.outtype in CONVERT:
        convert(args.tree, pathlib.Path(args.model_dir).resolve(), args.outtype, out, args.pre)
    else:
        quantize = pathlib.Path(args.tree, "build/bin/llama-quantize")
        with tempfile.TemporaryDirectory() as tmp:
            src = args.src
            if not src:
                src = pathlib.Path(tmp, "f32.gguf")
                convert(args.tree, pathlib.Path(args.model_dir).resolve(), "f32", src, args.pre)
            run = subprocess.run([str(quantize), str(src), str(out), QUANTIZE[args.outtype], "2"],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(run.stderr[-3000:])
    print(f"{out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
