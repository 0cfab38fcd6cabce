// Golden RoPE vectors computed by ggml itself (the CPU kernel of the llama.cpp
// tree in llama-cpp-python 0.3.36), for parity's tests/rope.rs.
//
//   gcc -O2 scripts/rope_golden_ggml.c -I $TREE/ggml/include -L $TREE/build/bin -lggml -lggml-base -lggml-cpu \
//       -Wl,-rpath,$TREE/build/bin -lm -o /tmp/rope_golden_ggml && /tmp/rope_golden_ggml tests/data/rope/ggml
//
// Each case writes <name>.x.f32 and <name>.y.f32 (raw little-endian f32, [T, H, hd]
// row-major) and one line of cases.txt: name mode hd heads n_dims theta ff(0/1) s0 s1 s2 s3.
// Inputs are a fixed pseudo-random pattern; positions are 0..9 and 100, 1000.
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include "ggml.h"
#include "ggml-cpu.h"

#define T 12
static const int POS[T] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 1000};

static float pattern(int i) {
    uint32_t s = (uint32_t)i * 2654435761u + 12345u;
    return (float)(s % 2000u) / 1000.0f - 1.0f;
}

static void write_f32(const char *dir, const char *name, const char *ext, const float *v, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s.f32", dir, name, ext);
    FILE *f = fopen(path, "wb");
    fwrite(v, sizeof(float), n, f);
    fclose(f);
}

static void run(const char *dir, FILE *idx, const char *name, int mode, int hd, int heads, int n_dims, float theta, int with_ff, const int *sections) {
    struct ggml_init_params ip = {64 * 1024 * 1024, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *x = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, heads, T);
    float *xd = (float *)x->data;
    for (int i = 0; i < hd * heads * T; i++) xd[i] = pattern(i);
    int multi = sections != NULL;
    struct ggml_tensor *pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, multi ? 4 * T : T);
    int32_t *pd = (int32_t *)pos->data;
    for (int t = 0; t < T; t++) {
        pd[t] = POS[t];
        if (multi) { pd[T + t] = POS[t]; pd[2 * T + t] = POS[t]; pd[3 * T + t] = 0; }  // text: t = h = w, e = 0
    }
    struct ggml_tensor *ff = NULL;
    if (with_ff) {
        ff = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n_dims / 2);
        for (int k = 0; k < n_dims / 2; k++) ((float *)ff->data)[k] = 1.0f + 0.25f * (float)(k % 5);
    }
    struct ggml_tensor *y = multi
        ? ggml_rope_multi(ctx, x, pos, ff, n_dims, (int *)sections, mode, 4096, theta, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f)
        : ggml_rope_ext(ctx, x, pos, ff, n_dims, mode, 4096, theta, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_graph_compute_with_ctx(ctx, gf, 1);
    write_f32(dir, name, "x", xd, (size_t)hd * heads * T);
    write_f32(dir, name, "y", (float *)y->data, (size_t)hd * heads * T);
    int s0 = multi ? sections[0] : 0, s1 = multi ? sections[1] : 0, s2 = multi ? sections[2] : 0, s3 = multi ? sections[3] : 0;
    fprintf(idx, "%s %d %d %d %d %.1f %d %d %d %d %d\n", name, mode, hd, heads, n_dims, theta, with_ff, s0, s1, s2, s3);
    ggml_free(ctx);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    char path[512];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *idx = fopen(path, "w");
    int mrope[4] = {8, 12, 12, 0};
    int imrope[4] = {12, 10, 10, 0};
    run(dir, idx, "norm-hd32", GGML_ROPE_TYPE_NORMAL, 32, 2, 32, 10000.0f, 0, NULL);
    run(dir, idx, "neox-hd64", GGML_ROPE_TYPE_NEOX, 64, 2, 64, 1000000.0f, 0, NULL);
    run(dir, idx, "neox-partial-hd64-n32", GGML_ROPE_TYPE_NEOX, 64, 2, 32, 10000.0f, 0, NULL);
    run(dir, idx, "neox-freqfactors-hd32", GGML_ROPE_TYPE_NEOX, 32, 2, 32, 500000.0f, 1, NULL);
    run(dir, idx, "mrope-hd64", GGML_ROPE_TYPE_MROPE, 64, 2, 64, 1000000.0f, 0, mrope);
    run(dir, idx, "imrope-hd64", GGML_ROPE_TYPE_IMROPE, 64, 2, 64, 1000000.0f, 0, imrope);
    fclose(idx);
    return 0;
}
