// The peer side of bench/peers.py: llama.cpp's decoder on the same workload as ours, timed the
// way llama.cpp's own tools/batched-bench does (same context settings, random tokens, one
// llama_decode per prefill chunk and per generation step, synchronised), but linked against
// libllama alone: batched-bench needs llama.cpp's "common" library, whose ~50 heavy
// translation units (chat templates, argument parsing, an HTTP client) cost more to build on a
// 2-core machine than the whole of libllama and ggml.
//
//   llama_step MODEL.gguf THREADS PROMPT TOKENS N1[,N2,...]
// prints one JSON line per N: {"pl": N, "pp": PROMPT, "tg": TOKENS, "t_pp": s, "t_tg": s,
// "speed_pp": tok/s, "speed_tg": tok/s}.
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.gguf THREADS PROMPT TOKENS N1[,N2,...]\n", argv[0]);
        return 2;
    }
    const int threads = atoi(argv[2]), pp = atoi(argv[3]), tg = atoi(argv[4]);
    std::vector<int> pls;
    for (char * s = strtok(argv[5], ","); s; s = strtok(nullptr, ",")) pls.push_back(atoi(s));
    int pl_max = 1;
    for (int p : pls) pl_max = p > pl_max ? p : pl_max;

    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();  // batched-bench's defaults:
    cp.n_ctx = pl_max * (pp + tg);                              // n_batch 2048, n_ubatch 512,
    cp.n_seq_max = pl_max;                                      // flash attention auto,
    cp.n_threads = threads;                                     // a KV cache per sequence
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int n_batch = (int) cp.n_batch;
    llama_batch batch = llama_batch_init(n_batch > pl_max ? n_batch : pl_max, 0, 1);
    std::srand(0);

    struct Tok { llama_token id; llama_pos pos; llama_seq_id seq; bool out; };
    auto run = [&](const std::vector<Tok> & toks) {  // in chunks of n_batch, synchronised
        for (size_t i = 0; i < toks.size(); i += n_batch) {
            batch.n_tokens = 0;
            for (size_t j = i; j < toks.size() && j < i + n_batch; ++j) {
                const int k = batch.n_tokens++;
                batch.token[k] = toks[j].id;
                batch.pos[k] = toks[j].pos;
                batch.n_seq_id[k] = 1;
                batch.seq_id[k][0] = toks[j].seq;
                batch.logits[k] = toks[j].out;
            }
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed\n"); exit(1); }
            llama_synchronize(ctx);
        }
    };
    {  // warm-up, as batched-bench: 16 tokens
        std::vector<Tok> w;
        for (int i = 0; i < 16; ++i) w.push_back({std::rand() % n_vocab, i, 0, false});
        run(w);
    }
    for (int pl : pls) {
        llama_memory_clear(llama_get_memory(ctx), false);
        std::vector<Tok> prompt;
        for (int s = 0; s < pl; ++s)
            for (int i = 0; i < pp; ++i) prompt.push_back({std::rand() % n_vocab, i, s, i == pp - 1});
        const double t0 = now_s();
        run(prompt);
        const double t1 = now_s();
        for (int i = 0; i < tg; ++i) {
            std::vector<Tok> step;
            for (int s = 0; s < pl; ++s) step.push_back({std::rand() % n_vocab, pp + i, s, true});
            run(step);
        }
        const double t2 = now_s();
        printf("{\"pl\": %d, \"pp\": %d, \"tg\": %d, \"t_pp\": %f, \"t_tg\": %f, "
               "\"speed_pp\": %f, \"speed_tg\": %f}\n", pl, pp, tg, t1 - t0, t2 - t1,
               pl * pp / (t1 - t0), pl * tg / (t2 - t1));
        fflush(stdout);
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
