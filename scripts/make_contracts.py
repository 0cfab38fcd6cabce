#!/usr/bin/env python3
"""Write the per-fixture contracts under contracts/fixtures/ from one template
per claim, so every fixture states the same claims with the same reasons.
Thresholds are not fitted per fixture: each carries the numeric reason that
justifies it for the dtypes involved. Run after scripts/regenerate.sh:

    python scripts/make_contracts.py
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "contracts" / "fixtures"
FIXTURES = ["llama-tiny", "mistral-tiny", "qwen2-tiny", "qwen3-tiny", "qwen3moe-tiny", "qwen3moe-norenorm-tiny", "llama-wide"]

# llama-wide's activations are large with heavy cancellation (ffn_out ~ -255 on some rows) and
# its layer-1 attention is sharp, so f32 summation-order noise is larger there: llama.cpp vs
# transformers (both f32) measures 7.6e-10 NMSE and the engine 2.1e-9 (L1.attn_out, row 72).
WIDE_NMSE = "    nmse: {{max: 1.0e-8}}          # llama-wide: f32 summation order is amplified by cancellation in its large activations and sharp L1 attention; an independent f32 engine (llama.cpp) measures 7.6e-10 against transformers, this one 2.1e-9; 1e-8 is 5x that\n"

TIGHT = """  - stages: logits
    top1_agreement: {{min: 1.0}}   # f32 vs f32: logits agree to ~1e-12 NMSE, far below any top-2 gap (median gap >= 1 logit)
    kl_divergence: {{max: 1.0e-8}} # softmax of logits equal to ~1e-6 relative gives KL ~1e-12; 1e-8 leaves room for long rows
    cosine: {{min: 0.99999}}
    nmse: {{max: 1.0e-9}}
  - stages: "*"
    cosine: {{min: 0.99999}}       # f32 vs f32: only summation order differs (SPEC §3)
    nmse: {{max: 1.0e-9}}          # f32 rounding (1.2e-7 relative) through two layers: measured <= 3.4e-12; 1e-9 is 300x that
"""

NOISE = """  - stages: logits
    topk_overlap: {{k: 5, margin: 0.5, min: 1.0}}  # the subject's pick is among transformers' top 5 and within half a logit of its best
    noise_ratio: {{max: {ratio}}}  # {why}
  - stages: "L*.expert_weights"
    max_abs: {{max: 0.03}}         # routing probabilities, k=2 per row: a per-row noise ratio is unstable there; transformers' own bf16 run moves them by up to 0.014 (qwen3moe-tiny L1), 0.03 is 2x that
  - stages: "*"
    noise_ratio: {{max: {ratio}}}  # {why}
"""

QREL = """  - stages: logits
    topk_overlap: {{k: 5, margin: 0.5, min: 1.0}}  # both pick a token the other ranks top-5 and within half a logit
    cosine: {{min: {cos}}}
  - stages: "*"
    cosine: {{min: {cos}}}         # {why}
    nmse: {{max: {nmse}}}
"""

WHY = {
    "f16": (1.0, "f16 weights (11-bit mantissa) are 8x finer than the bf16 reference's (8-bit): the subject must stay within one bf16 noise floor"),
    "bf16": (2.0, "bf16 weights with f32 activations: at most the bf16 reference's own noise (weights and activations in bf16), x2 for rows where that noise is small"),
    # Rounding RMS per weight for a Gaussian row of std s: bf16 s*2^-9/sqrt(3) ~ s/887;
    # a block format with step h has h/sqrt(12), h set by the block's largest |x| (~2.5s over 32 values).
    "q8_0": (8.0, "q8_0: step amax/127 per 32 values, RMS ~ 2.5s/(127*sqrt(12)) ~ s/176 vs bf16's s/887: ~5x; 8 leaves 1.6x room"),
    "q4_k_m": (180.0, "Q4_K_M: mostly 4-bit steps (range/15 per 32 values), RMS ~ 5s/(15*sqrt(12)) ~ s/10 vs bf16's s/887: ~85x per weight; measured 118 at llama-wide's L1.attn, whose sharp attention amplifies weight error more than bf16's; 180 = 1.5x the measurement"),
    "q6_k": (60.0, "Q6_K: step amax/32 per 16 values, RMS ~ 2s/(32*sqrt(12)) ~ s/55 vs bf16's s/887: ~16x per weight; measured 38 at llama-wide's L1.attn_out (same amplification as Q4_K_M); 60 = 1.6x the measurement"),
}


def contract(path, cid, claim, subject, reference, gates, low=None, expect_fail=None, header=""):
    fixture, name = cid.split("/", 1)
    if fixture == "llama-wide":
        gates = gates.replace("    nmse: {max: 1.0e-9}          # f32 rounding (1.2e-7 relative) through two layers: measured <= 3.4e-12; 1e-9 is 300x that\n", WIDE_NMSE.format()).replace("    nmse: {max: 1.0e-9}          # f32 rounding through one layer: measured ~1e-12\n", WIDE_NMSE.format())
    expect_fail = NEAR_TIE.get((fixture, name), expect_fail)
    if fixture == "qwen3moe-norenorm-tiny" and ("gguf" in name or "llamacpp-q8_0-vs-hf" in name) and "vs-llamacpp" not in name:
        expect_fail = RENORM
    text = header
    text += f"id: {cid}\nclaim: \"{claim}\"\nsubject: {subject}\nreference: {reference}\n"
    if low:
        text += f"reference_low: {low}\n"
    text += "gates:\n" + gates
    if expect_fail:
        text += f"expect_fail:\n  reason: \"{expect_fail[0]}\"\n  first_divergence: {expect_fail[1]}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


RENORM = ("the GGUF cannot say norm_topk_prob=false: llama.cpp's qwen3moe graph always renormalises the top-k expert weights (build_moe_ffn with norm_w=true) and parity's GGUF loader follows llama.cpp, while this checkpoint does not renormalise", "L0.expert_weights")
# Known, measured near ties: rounding flips one router decision (the finding prints the reference router's probabilities).
NEAR_TIE = {
    ("qwen3moe-tiny", "engine-gguf-bf16-vs-hf-f32"): ("bf16 weights flip a near-tied expert choice: at L1 row 59 the reference router gives experts 4 and 6 probabilities 0.1269 and 0.1261 (gap 0.0008)", "L1.expert_ids"),
    ("llama-wide", "engine-q8_0-vs-llamacpp-q8_0"): ("llama.cpp quantises activations to Q8_0 before every q8_0 matmul; layer 1's sharp attention amplifies the resulting q/k/v differences (cos 0.99998) to cos 0.975 at L1.attn. In isolation the engine's attention reproduces llama.cpp's from llama.cpp's own inputs (cos 0.99977), the gap is the same with an f32 KV cache and flash attention off, and it closes (cos 0.9985) when the engine rounds its matmul inputs as llama.cpp does: see engine-q8_0-llamacpp-rounding-vs-llamacpp-q8_0", "L1.attn"),
    ("llama-wide", "llamacpp-q8_0-vs-hf-f32"): ("llama.cpp's Q8_0 activation quantisation, amplified by layer 1's sharp attention, reaches 14x the bf16 noise floor at L1.attn (the engine on the same GGUF with f32 activations stays within 8x)", "L1.attn"),
    ("qwen3moe-norenorm-tiny", "engine-q8_0-vs-llamacpp-q8_0"): ("llama.cpp's Q8_0 activations flip a near-tied expert choice: at L1 row 11 the router gives experts 0 and 6 probabilities 0.2031 and 0.2036 (gap 0.0005)", "L1.expert_ids"),
}


def main():
    for f in FIXTURES:
        ref = ROOT / "reference" / f
        if not (ref / "hf-f32-long").exists():
            continue
        d = OUT / f
        r = f"../../../reference/{f}"
        m = f"../../../fixtures/{f}"
        g = f"{m}/gguf/{f}"
        for p in ["long", "chat"]:
            contract(d / f"engine-f32-vs-hf-f32-{p}.yaml", f"{f}/engine-f32-vs-hf-f32-{p}",
                     f"The engine on the safetensors weights matches transformers f32 at every stage and row ({p} prompt, prefill and decode).",
                     f"{{engine: {{model: {m}}}}}", f"{r}/hf-f32-{p}", TIGHT.format())
        contract(d / "engine-gguf-f32-vs-llamacpp-f32.yaml", f"{f}/engine-gguf-f32-vs-llamacpp-f32",
                 "The engine on the f32 GGUF matches llama.cpp's own nodes (f32 KV cache, flash attention off) at every stage.",
                 f"{{engine: {{model: {g}.f32.gguf}}}}", f"{r}/llamacpp-f32-long", TIGHT.format())
        ef = None
        if f == "qwen3moe-norenorm-tiny":
            ef = ("llama.cpp's qwen3moe graph always renormalises the top-k expert weights (llama-model.cpp passes norm_w=true to build_moe_ffn; the GGUF has no norm_topk_prob key), while this checkpoint has norm_topk_prob=false", "L0.expert_weights")
        swa = None
        if f == "mistral-tiny":
            swa = ("llama.cpp's converter writes MistralForCausalLM as arch llama (conversion/llama.py registers it on LlamaModel, whose set_gguf_parameters writes no sliding window), so the GGUF attends over the whole prefix where transformers masks keys 16 or more positions back; rows from 16 on differ", "L0.attn")
        ef = ef or swa
        contract(d / "llamacpp-f32-vs-hf-f32.yaml", f"{f}/llamacpp-f32-vs-hf-f32",
                 "llama.cpp (f32 GGUF, f32 KV cache, flash attention off) matches transformers f32 at every stage.",
                 f"{{trace: {r}/llamacpp-f32-long}}", f"{r}/hf-f32-long", TIGHT.format(), expect_fail=ef)
        for dt in ["f16", "bf16", "q8_0"] + (["q4_k_m", "q6_k"] if f == "llama-wide" else []):
            if dt in ("q4_k_m", "q6_k") and not (ROOT / "fixtures" / f / "gguf" / f"{f}.{dt}.gguf").exists():
                continue
            ratio, why = WHY[dt]
            contract(d / f"engine-gguf-{dt}-vs-hf-f32.yaml", f"{f}/engine-gguf-{dt}-vs-hf-f32",
                     f"The engine on the {dt} GGUF stays within {ratio}x transformers' own bf16 noise floor at every stage.",
                     f"{{engine: {{model: {g}.{dt}.gguf}}}}", f"{r}/hf-f32-long", NOISE.format(ratio=ratio, why=why), low=f"{r}/hf-bf16-long", expect_fail=swa)
        contract(d / "llamacpp-q8_0-vs-hf-f32.yaml", f"{f}/llamacpp-q8_0-vs-hf-f32",
                 "llama.cpp on the q8_0 GGUF with its defaults (f16 KV cache) stays within 12x transformers' bf16 noise floor.",
                 f"{{trace: {r}/llamacpp-q8_0-long}}", f"{r}/hf-f32-long",
                 NOISE.format(ratio=12.0, why="q8_0 weights (~5x bf16's rounding, see the engine's q8_0 contract) plus llama.cpp's Q8_0 activations in every q8_0 matmul (another ~5x-sized term) and its f16 KV cache: ~7x combined; 12 leaves 1.7x room"),
                 low=f"{r}/hf-bf16-long", expect_fail=swa)
        contract(d / "engine-q8_0-vs-llamacpp-q8_0.yaml", f"{f}/engine-q8_0-vs-llamacpp-q8_0",
                 "The engine and llama.cpp on the same q8_0 GGUF agree to within llama.cpp's activation quantisation.",
                 f"{{engine: {{model: {g}.q8_0.gguf}}}}", f"{r}/llamacpp-q8_0-long",
                 QREL.format(cos=0.998, nmse=4.0e-3, why="llama.cpp quantises each matmul's activations to Q8_0 (8-bit per 32 values: ~0.2% relative error each) and stores K/V in f16; the engine keeps f32 activations: NMSE ~1e-4..1e-3 through two layers, cos >= 0.998"))
        if f == "llama-wide":
            contract(d / "engine-q8_0-llamacpp-rounding-vs-llamacpp-q8_0.yaml", f"{f}/engine-q8_0-llamacpp-rounding-vs-llamacpp-q8_0",
                     "With its matmul inputs rounded as llama.cpp's CPU backend does (Q8_0 activations for q8_0 weights), the engine agrees with llama.cpp on the q8_0 GGUF, layer 1's sharp attention included.",
                     f"{{engine: {{model: {g}.q8_0.gguf, settings: {{activation_rounding: llamacpp}}}}}}", f"{r}/llamacpp-q8_0-long",
                     QREL.format(cos=0.998, nmse=4.0e-3, why="both sides now quantise activations to Q8_0; what remains is llama.cpp's f16 KV cache and f16 Q in its attention dot products (not emulated) and summation order: measured cos 0.9985, NMSE 3.2e-3 at L1.attn_out"))
        if f == "llama-wide" and (ref / "hf-f32-long-L1").exists():
            contract(d / "engine-f32-vs-hf-f32-long-L1.yaml", f"{f}/engine-f32-vs-hf-f32-long-L1",
                     "On a partial-depth reference (first layer only, read from the sharded safetensors), the engine run with layers: 1 matches transformers f32.",
                     f"{{engine: {{model: {m}, layers: 1}}}}", f"{r}/hf-f32-long-L1",
                     "  - stages: \"*\"\n    cosine: {min: 0.99999}       # f32 vs f32: only summation order differs (SPEC §3)\n"
                     "    nmse: {max: 1.0e-9}          # f32 rounding through one layer: measured ~1e-12\n")
    print("contracts written under", OUT)


if __name__ == "__main__":
    main()
