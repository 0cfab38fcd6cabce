// Golden RoPE vectors computed by ggml itself (the CPU kernel of the llama.cpp
// tree in llama-cpp-python 0.3.36), for parity's tests/rope.rs.
//
//   gcc -O2 scripts/rope_golden_ggml.c -I $TREE/ggml/include -L $TREE/build/bin -lggml -lggml-base -lggml-cpu
//     -Wl,-rpath,$TREE/build/bin -lm -o /tmp/rope_golden_ggml && /tmp/rope_golden_ggml tests/data/rope/ggml
//
// Each case writes <name>.x.f32 and <name>.y.f32 (raw little-endian f32, [T, H, hd]
// row-major), <name>.pos.i32 (the op's position tensor: T values, or 4*T laid out
// t.., h.., w.., e.. for the M-RoPE modes), <name>.ff.f32 when it has frequency
// factors, and one line of cases.txt of key=value fields: the op parameters as
// passed to ggml_rope_ext / ggml_rope_multi, plus the transformers-side scaling the
// parameters encode (scaling=...), which is what tests/rope.rs configures.
// Inputs are a fixed pseudo-random pattern.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ggml.h"
#include "ggml-cpu.h"

#define T 14
static const int POS[T] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 1000, 4096, 30000};

// Axes for the M-RoPE modes: text (t = h = w = p, e = 0, as llama-graph.cpp sets
// them for text tokens), or distinct axes as an image grid would give.
enum axes { TEXT, THW, THWE };

struct rope_case {
    const char *name;
    int mode, hd, heads, n_dims;
    float theta, freq_scale, ext_factor, attn_factor;
    int n_ctx_orig;
    float beta_fast, beta_slow;
    const char *ff;        // NULL, "pattern", "llama3" or "zeropad:<rotated pairs>"
    int sections[4];
    enum axes axes;
    const char *scaling;   // what the op parameters encode, for the test's RopeConfig
};

static float pattern(int i) {
    uint32_t s = (uint32_t)i * 2654435761u + 12345u;
    return (float)(s % 2000u) / 1000.0f - 1.0f;
}

static void write_raw(const char *dir, const char *name, const char *ext, const void *v, size_t bytes) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    fwrite(v, 1, bytes, f);
    fclose(f);
}

// llama.cpp's converter (conversion/llama.py) for llama3 scaling: per-pair divisors.
static float llama3_divisor(double inv, double factor, double lo, double hi, double old_ctx) {
    double wl = 2 * M_PI / inv, lo_wl = old_ctx / lo, hi_wl = old_ctx / hi;
    if (wl < hi_wl) return 1.0f;
    if (wl > lo_wl) return (float)factor;
    double smooth = (old_ctx / wl - lo) / (hi - lo);
    return (float)(1.0 / ((1 - smooth) / factor + smooth));
}

// llama-context.cpp: yarn_attn_factor = get_mscale(factor) / (1 + 0.1 ln factor),
// cancelling the kernel's own (1 + 0.1 ln(1/freq_scale)).
static float llama_yarn_attn_factor(float factor) {
    float mscale = factor <= 1.0f ? 1.0f : 0.1f * logf(factor) + 1.0f;
    return mscale * (1.0f / (1.0f + 0.1f * logf(factor)));
}

static void run(const char *dir, FILE *idx, const struct rope_case *c) {
    struct ggml_init_params ip = {64 * 1024 * 1024, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    const int hd = c->hd, heads = c->heads;
    struct ggml_tensor *x = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, heads, T);
    float *xd = (float *)x->data;
    for (int i = 0; i < hd * heads * T; i++) xd[i] = pattern(i + 7919 * c->mode + hd);
    int multi = (c->mode & GGML_ROPE_TYPE_MROPE) != 0;
    struct ggml_tensor *pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, multi ? 4 * T : T);
    int32_t *pd = (int32_t *)pos->data;
    for (int t = 0; t < T; t++) {
        int p = POS[t];
        pd[t] = p;
        if (!multi) continue;
        int text = c->axes == TEXT;
        pd[T + t] = text ? p : p / 2 + t % 3;
        pd[2 * T + t] = text ? p : p / 3 + 5 * (t % 2);
        pd[3 * T + t] = c->axes == THWE ? p / 4 + 1 : 0;
    }
    struct ggml_tensor *ff = NULL;
    if (c->ff) {
        int n = c->n_dims / 2;
        ff = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        float *fd = (float *)ff->data;
        for (int k = 0; k < n; k++) {
            if (!strcmp(c->ff, "pattern")) {
                fd[k] = 1.0f + 0.25f * (float)(k % 5);
            } else if (!strcmp(c->ff, "llama3")) {
                // transformers' f32 default frequency 1/base^(2k/n), then the divisor in double
                float e = (float)(2 * k) / (float)c->n_dims;
                float inv = 1.0f / (float)pow((double)c->theta, (double)e);
                fd[k] = llama3_divisor(inv, 8.0, 1.0, 4.0, 8192.0);
            } else {  // zeropad:<r>: Gemma 4's proportional RoPE (conversion/gemma.py)
                int r = 0;
                sscanf(c->ff, "zeropad:%d", &r);
                fd[k] = k < r ? 1.0f : 1e30f;
            }
        }
        write_raw(dir, c->name, "ff.f32", fd, sizeof(float) * n);
    }
    struct ggml_tensor *y = multi
        ? ggml_rope_multi(ctx, x, pos, ff, c->n_dims, (int *)c->sections, c->mode, c->n_ctx_orig, c->theta, c->freq_scale,
                          c->ext_factor, c->attn_factor, c->beta_fast, c->beta_slow)
        : ggml_rope_ext(ctx, x, pos, ff, c->n_dims, c->mode, c->n_ctx_orig, c->theta, c->freq_scale, c->ext_factor,
                        c->attn_factor, c->beta_fast, c->beta_slow);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_graph_compute_with_ctx(ctx, gf, 1);
    write_raw(dir, c->name, "x.f32", xd, sizeof(float) * hd * heads * T);
    write_raw(dir, c->name, "y.f32", y->data, sizeof(float) * hd * heads * T);
    write_raw(dir, c->name, "pos.i32", pd, sizeof(int32_t) * (multi ? 4 * T : T));
    fprintf(idx, "name=%s mode=%d hd=%d heads=%d n_dims=%d theta=%.9g freq_scale=%.9g ext_factor=%.9g attn_factor=%.9g "
                 "n_ctx_orig=%d beta_fast=%.9g beta_slow=%.9g ff=%s sections=%d,%d,%d,%d T=%d scaling=%s\n",
            c->name, c->mode, hd, heads, c->n_dims, c->theta, c->freq_scale, c->ext_factor, c->attn_factor, c->n_ctx_orig,
            c->beta_fast, c->beta_slow, c->ff ? c->ff : "none", c->sections[0], c->sections[1], c->sections[2],
            c->sections[3], T, c->scaling);
    ggml_free(ctx);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    char path[512];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *idx = fopen(path, "w");
    const int NORM = GGML_ROPE_TYPE_NORMAL, NEOX = GGML_ROPE_TYPE_NEOX, MROPE = GGML_ROPE_TYPE_MROPE, IMROPE = GGML_ROPE_TYPE_IMROPE;
    const float y16 = llama_yarn_attn_factor(16.0f), y4 = llama_yarn_attn_factor(4.0f);
    const struct rope_case cases[] = {
        // name                     mode    hd heads nd  theta   fscale  ext  attn  ctx   bf    bs   ff                sections        axes  scaling
        {"norm-hd32",               NORM,   32, 2, 32,  1e4f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {0, 0, 0, 0},   TEXT, "none"},
        {"neox-hd64",               NEOX,   64, 2, 64,  1e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {0, 0, 0, 0},   TEXT, "none"},
        {"neox-hd128",              NEOX,  128, 2, 128, 1e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {0, 0, 0, 0},   TEXT, "none"},
        {"neox-partial-hd64-n32",   NEOX,   64, 2, 32,  1e4f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {0, 0, 0, 0},   TEXT, "none"},
        {"neox-freqfactors-hd32",   NEOX,   32, 2, 32,  5e5f,   1.0f,   0,   1.0f, 4096, 32,   1,   "pattern",        {0, 0, 0, 0},   TEXT, "freq_factors"},
        {"norm-llama3-hd64",        NORM,   64, 2, 64,  5e5f,   1.0f,   0,   1.0f, 8192, 32,   1,   "llama3",         {0, 0, 0, 0},   TEXT, "llama3:8,1,4,8192"},
        {"neox-linear-hd32",        NEOX,   32, 2, 32,  1e4f,   0.25f,  0,   1.0f, 4096, 32,   1,   NULL,             {0, 0, 0, 0},   TEXT, "linear:4"},
        {"neox-yarn-hd64",          NEOX,   64, 2, 64,  1e6f,   1/16.f, 1,   y16,  4096, 32,   1,   NULL,             {0, 0, 0, 0},   TEXT, "yarn:16,4096,32,1"},
        {"norm-yarn-beta-hd32",     NORM,   32, 2, 32,  1e4f,   0.25f,  1,   y4,   256,  24,   2,   NULL,             {0, 0, 0, 0},   TEXT, "yarn:4,256,24,2"},
        {"neox-zeropad-hd64",       NEOX,   64, 2, 64,  1e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   "zeropad:8",      {0, 0, 0, 0},   TEXT, "zeropad:16"},
        {"mrope-hd64",              MROPE,  64, 2, 64,  1e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {8, 12, 12, 0}, TEXT, "none"},
        {"mrope-thw-hd64",          MROPE,  64, 2, 64,  1e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {8, 12, 12, 0}, THW,  "none"},
        {"mrope-thwe-hd64",         MROPE,  64, 2, 64,  1e4f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {8, 8, 8, 8},   THWE, "none"},
        {"imrope-hd64",             IMROPE, 64, 2, 64,  1e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {12, 10, 10, 0}, TEXT, "none"},
        {"imrope-text-hd128",       IMROPE,128, 2, 128, 5e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {24, 20, 20, 0}, TEXT, "none"},
        {"imrope-thw-hd128",        IMROPE,128, 2, 128, 5e6f,   1.0f,   0,   1.0f, 4096, 32,   1,   NULL,             {24, 20, 20, 0}, THW,  "none"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run(dir, idx, &cases[i]);
    fclose(idx);
    return 0;
}
