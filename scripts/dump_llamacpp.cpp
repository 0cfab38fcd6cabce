// parity: record the graph nodes llama.cpp evaluates on given token ids.
//
// Built against the llama.cpp tree of llama-cpp-python 0.3.36 by
// scripts/build_llamacpp.sh (links that tree's `llama` and `ggml` libraries).
// It never tokenises: the token ids and the batch split come from the command
// line, every batch is its own llama_decode call through the KV cache, and
// logits are requested for every row.
//
//   parity-dump-llamacpp MODEL.gguf OUT_DIR --tokens 5,77,140 --batches 0:2,2:3
//       [--kv-type f32|f16|default] [--flash-attn on|off|auto|default] [--threads N]
//
// Output, per call c (0-based):
//   OUT_DIR/call<c>.tsv     one line per graph node the eval callback saw, in
//                           execution order; columns:
//                           seq name op type ne0 ne1 ne2 ne3 kind offset id src0 src1 src2 src0name src1name
//                           (kind f32|i32|none; offset = element offset into call<c>.bin;
//                           id/srcN = tensor addresses in hex, so sources resolve to
//                           earlier nodes even when a node has no name)
//   OUT_DIR/call<c>.bin     the node values, f32 or i32, ggml order (ne0 fastest),
//                           f16/bf16/quantised nodes converted with ggml's to_float
//   OUT_DIR/logits<c>.bin   f32 [rows, n_vocab]
//   OUT_DIR/info.txt        effective settings (key value), one per line
#include "ggml.h"
#include "ggml-backend.h"
#include "llama.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Recorder {
    FILE * tsv = nullptr;
    FILE * bin = nullptr;
    int64_t seq = 0;
    int64_t offset = 0;           // elements written to bin so far
    bool saw_flash_attn = false;  // a FLASH_ATTN_EXT node was evaluated
    std::vector<uint8_t> host;
    std::vector<float> row;
};

bool convertible(const ggml_tensor * t) {
    if (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_I32) return true;
    const auto * tr = ggml_get_type_traits(t->type);
    return tr && tr->to_float != nullptr;
}

// Copies one node to the recorder's files. Called after the node is computed.
void record(Recorder & r, ggml_tensor * t) {
    if (t->op == GGML_OP_FLASH_ATTN_EXT) r.saw_flash_attn = true;
    const bool ok = t->data != nullptr && convertible(t);
    const bool is_int = t->type == GGML_TYPE_I32;
    fprintf(r.tsv, "%" PRId64 "\t%s\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%s\t%" PRId64 "\t%p",
            r.seq++, t->name[0] ? t->name : "-", ggml_op_desc(t), ggml_type_name(t->type),
            t->ne[0], t->ne[1], t->ne[2], t->ne[3], ok ? (is_int ? "i32" : "f32") : "none",
            ok ? r.offset : (int64_t) -1, (void *) t);
    for (int s = 0; s < 3; s++) fprintf(r.tsv, "\t%p", (void *) t->src[s]);
    for (int s = 0; s < 2; s++) fprintf(r.tsv, "\t%s", t->src[s] && t->src[s]->name[0] ? t->src[s]->name : "-");
    fprintf(r.tsv, "\n");
    if (!ok) return;

    const size_t nbytes = ggml_nbytes(t);
    r.host.resize(nbytes);
    ggml_backend_tensor_get(t, r.host.data(), 0, nbytes);
    const size_t ts = ggml_type_size(t->type);
    const int64_t bs = ggml_blck_size(t->type);
    const auto * tr = ggml_get_type_traits(t->type);
    const bool rows_contiguous = t->nb[0] == ts;  // elements of a row are packed (always true for blocks)
    r.row.resize(t->ne[0]);
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
    for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
    for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
        const uint8_t * p = r.host.data() + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
        if (is_int) {
            std::vector<int32_t> v(t->ne[0]);
            for (int64_t i0 = 0; i0 < t->ne[0]; i0++) memcpy(&v[i0], p + i0 * t->nb[0], 4);
            fwrite(v.data(), 4, v.size(), r.bin);
        } else if (t->type == GGML_TYPE_F32) {
            for (int64_t i0 = 0; i0 < t->ne[0]; i0++) memcpy(&r.row[i0], p + i0 * t->nb[0], 4);
            fwrite(r.row.data(), 4, r.row.size(), r.bin);
        } else if (rows_contiguous || bs > 1) {
            tr->to_float(p, r.row.data(), t->ne[0]);
            fwrite(r.row.data(), 4, r.row.size(), r.bin);
        } else {  // strided f16/bf16 view: one element at a time
            for (int64_t i0 = 0; i0 < t->ne[0]; i0++) tr->to_float(p + i0 * t->nb[0], &r.row[i0], 1);
            fwrite(r.row.data(), 4, r.row.size(), r.bin);
        }
    }
    r.offset += ggml_nelements(t);
}

bool on_eval(ggml_tensor * t, bool ask, void * user) {
    auto * r = static_cast<Recorder *>(user);
    if (ask) return true;  // we want every node: the callback then runs after each one
    if (r->tsv) record(*r, t);
    return true;
}

std::vector<long> parse_ints(const std::string & s) {
    std::vector<long> v;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find_first_of(",:", i);
        if (j == std::string::npos) j = s.size();
        v.push_back(std::stol(s.substr(i, j - i)));
        i = j + 1;
    }
    return v;
}

[[noreturn]] void usage(const char * argv0) {
    fprintf(stderr,
            "usage: %s MODEL.gguf OUT_DIR --tokens a,b,c --batches 0:n,n:m "
            "[--kv-type f32|f16|default] [--flash-attn on|off|auto|default] [--threads N]\n",
            argv0);
    exit(2);
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 3) usage(argv[0]);
    const std::string model_path = argv[1], out = argv[2];
    std::vector<long> tokens, bounds;
    std::string kv = "default", fa = "default";
    int threads = 2;
    for (int i = 3; i < argc; i += 2) {
        if (i + 1 >= argc) usage(argv[0]);
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--tokens") tokens = parse_ints(v);
        else if (k == "--batches") bounds = parse_ints(v);
        else if (k == "--kv-type") kv = v;
        else if (k == "--flash-attn") fa = v;
        else if (k == "--threads") threads = std::stoi(v);
        else usage(argv[0]);
    }
    if (tokens.empty() || bounds.empty() || bounds.size() % 2 != 0) usage(argv[0]);
    for (size_t c = 0; c < bounds.size(); c += 2) {
        if (bounds[c] >= bounds[c + 1] || bounds[c + 1] > (long) tokens.size() || (c > 0 && bounds[c] != bounds[c - 1])) {
            fprintf(stderr, "--batches must be consecutive ranges within the tokens\n");
            return 2;
        }
    }
    long max_batch = 0;
    for (size_t c = 0; c < bounds.size(); c += 2) max_batch = std::max(max_batch, bounds[c + 1] - bounds[c]);

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path.c_str()); return 1; }

    Recorder rec;
    llama_context_params cp = llama_context_default_params();
    const uint32_t n_ctx = (uint32_t) ((tokens.size() + 255) / 256 * 256);
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;  // the prefill must be one ubatch: one graph per call
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    if (kv == "f32") cp.type_k = cp.type_v = GGML_TYPE_F32;
    else if (kv == "f16") cp.type_k = cp.type_v = GGML_TYPE_F16;
    else if (kv != "default") usage(argv[0]);
    if (fa == "on") cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    else if (fa == "off") cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    else if (fa == "auto") cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    else if (fa != "default") usage(argv[0]);
    cp.cb_eval = on_eval;
    cp.cb_eval_user_data = &rec;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }

    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const size_t n_calls = bounds.size() / 2;
    for (size_t c = 0; c < n_calls; c++) {
        const long a = bounds[2 * c], b = bounds[2 * c + 1];
        llama_batch batch = llama_batch_init((int32_t) (b - a), 0, 1);
        batch.n_tokens = (int32_t) (b - a);
        for (long i = a; i < b; i++) {
            const long j = i - a;
            batch.token[j] = (llama_token) tokens[i];
            batch.pos[j] = (llama_pos) i;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = 1;  // logits (and so every layer's rows) for every position
        }
        const std::string base = out + "/call" + std::to_string(c);
        rec.tsv = fopen((base + ".tsv").c_str(), "w");
        rec.bin = fopen((base + ".bin").c_str(), "wb");
        if (!rec.tsv || !rec.bin) { fprintf(stderr, "cannot write under %s\n", out.c_str()); return 1; }
        rec.seq = 0;
        rec.offset = 0;
        const int rc = llama_decode(ctx, batch);
        fclose(rec.tsv);
        fclose(rec.bin);
        rec.tsv = rec.bin = nullptr;
        if (rc != 0) { fprintf(stderr, "llama_decode failed (%d) on call %zu\n", rc, c); return 1; }
        FILE * lf = fopen((out + "/logits" + std::to_string(c) + ".bin").c_str(), "wb");
        for (long j = 0; j < b - a; j++) {
            const float * l = llama_get_logits_ith(ctx, (int32_t) j);
            if (!l) { fprintf(stderr, "no logits for row %ld of call %zu\n", j, c); return 1; }
            fwrite(l, sizeof(float), n_vocab, lf);
        }
        fclose(lf);
        llama_batch_free(batch);
    }

    FILE * info = fopen((out + "/info.txt").c_str(), "w");
    fprintf(info, "n_vocab %d\n", n_vocab);
    fprintf(info, "n_calls %zu\n", n_calls);
    fprintf(info, "type_k %s\n", ggml_type_name(cp.type_k));
    fprintf(info, "type_v %s\n", ggml_type_name(cp.type_v));
    fprintf(info, "flash_attn_requested %s\n", llama_flash_attn_type_name(cp.flash_attn_type));
    fprintf(info, "flash_attn_effective %s\n", rec.saw_flash_attn ? "on" : "off");
    fprintf(info, "threads %d\n", threads);
    fprintf(info, "n_ctx %u\n", n_ctx);
    fprintf(info, "system %s\n", llama_print_system_info());
    fclose(info);

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
