// Dump llama.cpp's own graph nodes while it evaluates given token ids.
//
// Build against the llama.cpp tree of llama-cpp-python 0.3.36 (see
// scripts/build_llamacpp.sh); never tokenises: the token ids and the batch
// split come from the command line, each batch is its own llama_decode call,
// and logits are requested for every row.
//
//   dump_llamacpp MODEL.gguf OUT_DIR --tokens 1,2,3 --batches 0:3,3:4
//                 [--kv-type f32|f16] [--flash-attn on|off|auto] [--threads N]
//
// For every call c it writes OUT_DIR/call<c>.bin: one record per graph node
// the eval callback sees, in execution order:
//   u32 len, name | u32 len, op | u32 len, src0 name | u32 len, src1 name |
//   u32 kind (0 = f32 values, 1 = i32 values) | i64 ne[4] | values (ne0*ne1*ne2*ne3)
// and OUT_DIR/logits<c>.bin (f32, rows x n_vocab). scripts/dump_llamacpp.py
// maps the nodes to canonical stages.
#include "ggml.h"
#include "ggml-backend.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct Dump {
    FILE * f = nullptr;
    std::vector<uint8_t> buf;
};

static void put_str(FILE * f, const char * s) {
    uint32_t n = s ? (uint32_t) strlen(s) : 0;
    fwrite(&n, 4, 1, f);
    if (n) fwrite(s, 1, n, f);
}

// Reads element (i0..i3) of a tensor copied to host, honouring its strides.
static double element(const uint8_t * d, const ggml_tensor * t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    size_t o = i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
    switch (t->type) {
        case GGML_TYPE_F32: return *(const float *) (d + o);
        case GGML_TYPE_F16: return ggml_fp16_to_fp32(*(const ggml_fp16_t *) (d + o));
        case GGML_TYPE_BF16: return ggml_bf16_to_fp32(*(const ggml_bf16_t *) (d + o));
        case GGML_TYPE_I32: return *(const int32_t *) (d + o);
        default: return 0.0;
    }
}

static bool on_node(struct ggml_tensor * t, bool ask, void * user) {
    auto * st = (Dump *) user;
    bool supported = t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16 || t->type == GGML_TYPE_I32;
    if (ask) {
        return supported;
    }
    if (!supported || !st->f) {
        return true;
    }
    size_t nbytes = ggml_nbytes(t);
    st->buf.resize(nbytes);
    ggml_backend_tensor_get(t, st->buf.data(), 0, nbytes);
    put_str(st->f, t->name);
    put_str(st->f, ggml_op_desc(t));
    put_str(st->f, t->src[0] ? t->src[0]->name : "");
    put_str(st->f, t->src[1] ? t->src[1]->name : "");
    uint32_t kind = t->type == GGML_TYPE_I32 ? 1 : 0;
    fwrite(&kind, 4, 1, st->f);
    int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
    fwrite(ne, 8, 4, st->f);
    for (int64_t i3 = 0; i3 < ne[3]; i3++)
        for (int64_t i2 = 0; i2 < ne[2]; i2++)
            for (int64_t i1 = 0; i1 < ne[1]; i1++)
                for (int64_t i0 = 0; i0 < ne[0]; i0++) {
                    double v = element(st->buf.data(), t, i0, i1, i2, i3);
                    if (kind == 1) {
                        int32_t x = (int32_t) v;
                        fwrite(&x, 4, 1, st->f);
                    } else {
                        float x = (float) v;
                        fwrite(&x, 4, 1, st->f);
                    }
                }
    return true;
}

static std::vector<long> parse_list(const char * s) {
    std::vector<long> v;
    const char * p = s;
    while (*p) {
        char * end;
        v.push_back(strtol(p, &end, 10));
        p = (*end == ',' || *end == ':') ? end + 1 : end;
        if (end == p && *p) return {};
    }
    return v;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf OUT_DIR --tokens a,b,c --batches 0:n,n:m [--kv-type f32|f16] [--flash-attn on|off|auto] [--threads N]\n", argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    std::string out = argv[2];
    std::vector<long> tokens, bounds;
    std::string kv = "f16", fa = "auto";
    int threads = 2;
    for (int i = 3; i + 1 < argc; i += 2) {
        std::string k = argv[i];
        if (k == "--tokens") tokens = parse_list(argv[i + 1]);
        else if (k == "--batches") bounds = parse_list(argv[i + 1]);
        else if (k == "--kv-type") kv = argv[i + 1];
        else if (k == "--flash-attn") fa = argv[i + 1];
        else if (k == "--threads") threads = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
    }
    if (tokens.empty() || bounds.empty() || bounds.size() % 2) {
        fprintf(stderr, "--tokens and --batches are required\n");
        return 2;
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 2; }
    Dump st;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 1024;
    cp.n_ubatch = 1024;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = kv == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
    cp.type_v = cp.type_k;
    cp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.cb_eval = on_node;
    cp.cb_eval_user_data = &st;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 2; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    printf("flash_attn_type %s\n", llama_flash_attn_type_name(cp.flash_attn_type));
    for (size_t c = 0; c * 2 < bounds.size(); c++) {
        long a = bounds[2 * c], b = bounds[2 * c + 1];
        llama_batch batch = llama_batch_init((int) (b - a), 0, 1);
        for (long i = a; i < b; i++) {
            int j = (int) (i - a);
            batch.token[j] = (llama_token) tokens[i];
            batch.pos[j] = (llama_pos) i;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = 1;
        }
        batch.n_tokens = (int) (b - a);
        std::string path = out + "/call" + std::to_string(c) + ".bin";
        st.f = fopen(path.c_str(), "wb");
        if (!st.f) { fprintf(stderr, "cannot write %s\n", path.c_str()); return 2; }
        int rc = llama_decode(ctx, batch);
        fclose(st.f);
        st.f = nullptr;
        if (rc != 0) { fprintf(stderr, "llama_decode failed (%d) on call %zu\n", rc, c); return 1; }
        std::string lp = out + "/logits" + std::to_string(c) + ".bin";
        FILE * lf = fopen(lp.c_str(), "wb");
        for (long i = 0; i < b - a; i++) {
            fwrite(llama_get_logits_ith(ctx, (int) i), 4, n_vocab, lf);
        }
        fclose(lf);
        llama_batch_free(batch);
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
