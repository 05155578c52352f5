// The Python module. Kept apart from the kernels because torch/extension.h (pybind11 and all of
// torch's headers) is the slow part of the build: the kernel files include only ATen's types.
// Every call releases the GIL, so the server's other threads (HTTP, the page) run while a
// kernel computes.
#include <torch/extension.h>

#include "kernels.h"

#define DEF(name) m.def(#name, &name, py::call_guard<py::gil_scoped_release>())

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fun-ASR-Nano CPU kernels (engine/kernels/csrc)";
  DEF(linear_bf16);
  DEF(linear_int8);
  DEF(gemm_bf16);
  DEF(rms_norm);
  DEF(qk_norm_rope_);
  DEF(decode_attention);
  DEF(fsmn_memory);
  DEF(has_avx512);
  DEF(has_vnni);
  DEF(has_avx512bf16);
  DEF(gemm_bf16dot);
  DEF(q8_linear);
  DEF(q8_gemm);
  DEF(q8_mlp);
  DEF(q8_attention);
  DEF(b16_linear);
  DEF(b16_mlp);
  DEF(b16_attention);
  DEF(screen_prepare);
  DEF(screen_argmax);
  DEF(prefill_attention_bf16);
  py::class_<LayerStack, std::shared_ptr<LayerStack>>(m, "LayerStack")
      .def("forward", &LayerStack::forward, py::call_guard<py::gil_scoped_release>());
  DEF(q8_stack);
  DEF(b16_stack);
}
