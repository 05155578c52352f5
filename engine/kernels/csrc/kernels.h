// The functions the extension exports to Python (bindings.cpp). Tensors are CPU tensors; each
// definition checks dtypes and shapes and says which argument is wrong.
#pragma once

#include <ATen/core/Tensor.h>
#include <memory>
#include <vector>

using Tensor = at::Tensor;
using Tensors = std::vector<at::Tensor>;

// avx2.cpp: AVX2/FMA, any x86-64 CPU with AVX2
Tensor linear_bf16(Tensor x, Tensor w);
Tensor linear_int8(Tensor x, Tensor w, Tensor scale);
Tensor gemm_bf16(Tensor x, Tensor w);
Tensor rms_norm(Tensor x, Tensor w, double eps);
void qk_norm_rope_(Tensor q, Tensor k, Tensor qw, Tensor kw, Tensor cos, Tensor sin, double eps);
Tensor decode_attention(Tensor q, Tensor k, Tensor v, Tensor kc, Tensor vc, Tensor rows,
                        Tensor pos);
Tensor fsmn_memory(Tensor v, Tensor wt, int64_t left);

// avx512.cpp: callable only where has_avx512() (and, for q8_* and screen_*, has_vnni())
bool has_avx512();
bool has_vnni();
Tensor q8_linear(Tensor x, Tensor w, Tensor s, Tensor sum, Tensor bias);
Tensor q8_gemm(Tensor x, Tensor wp, Tensor s, Tensor sum, Tensor bias);
Tensor q8_mlp(Tensor x, Tensor nw, double eps, Tensors gu, Tensors gus, Tensors gusum,
              Tensor dn, Tensor dns, Tensor dnsum);
Tensor q8_attention(Tensor x, Tensor nw, double eps, Tensors qkv, Tensors qkvs, Tensors qkvsum,
                    Tensor qn, Tensor kn, Tensor cos, Tensor sin, Tensor kc, Tensor vc,
                    Tensor rows, Tensor pos, Tensor o, Tensor os, Tensor osum);
// gemm_bf16dot: also has_avx512bf16() (the bf16 mode's prefill; activations rounded to bf16)
bool has_avx512bf16();
Tensor gemm_bf16dot(Tensor x, Tensor w);
Tensor b16_linear(Tensor x, Tensor w, Tensor bias);
Tensor b16_mlp(Tensor x, Tensor nw, double eps, Tensors gu, Tensor dn);
Tensor b16_attention(Tensor x, Tensor nw, double eps, Tensors qkv, Tensor qn, Tensor kn,
                     Tensor cos, Tensor sin, Tensor kc, Tensor vc, Tensor rows, Tensor pos,
                     Tensor o);
Tensors screen_prepare(Tensor w);

// A decoder's layers for one-token steps, held once and run in one call per token: the int8
// and the bf16-stored kinds behind one interface (avx512.cpp's Stack).
class LayerStack {
 public:
  virtual ~LayerStack() = default;
  // x (B, 1, C) through every layer; kc[l], vc[l] layer l's caches, rows and pos as the steps'
  virtual Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensors kc, Tensors vc, Tensor rows,
                         Tensor pos) = 0;
};
// layers: per layer the step's arguments in its order (int8: [norms (input, post-attention,
// q, k), qkv, qkv scales, qkv sums, (o, scale, sum), gu, gu scales, gu sums, (down, scale,
// sum)]; bf16: [norms, qkv, (o,), gu, (down,)])
std::shared_ptr<LayerStack> q8_stack(std::vector<std::vector<Tensors>> layers, double eps);
std::shared_ptr<LayerStack> b16_stack(std::vector<std::vector<Tensors>> layers, double eps);

// prefill_attention.cpp: also has_avx512bf16() (the bf16 mode's prompt attention)
Tensor prefill_attention_bf16(Tensor q, Tensor k, Tensor v, int64_t heads, int64_t kv_heads);
Tensors screen_argmax(Tensor x, Tensor w, Tensor w8, Tensor s, Tensor sum, Tensor qn, Tensor en,
                      Tensor banned);
