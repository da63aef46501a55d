// The CUDA extension module: FFI handler capsules of the CUDA custom calls for
// jax.ffi.register_ffi_target(..., platform="CUDA"), the build's jaxlib / FFI
// API versions and the table format's constants (the same as the CPU
// module's): every op of the CPU module.
#include <nanobind/nanobind.h>

#include "hypereca/common.h"
#include "module_common.h"
#include "xla/ffi/api/c_api.h"

#define HYPERECA_DECLARE_HANDLER(stem, name) \
  XLA_FFI_Error* Hypereca##stem##Cuda(XLA_FFI_CallFrame*);
extern "C" {
HYPERECA_FOR_EACH_OP(HYPERECA_DECLARE_HANDLER)
}
#undef HYPERECA_DECLARE_HANDLER

namespace nb = nanobind;

NB_MODULE(_hypereca_cuda, m) {
  m.def("registrations", []() {
    nb::dict d;
#define HYPERECA_REGISTER_HANDLER(stem, name) \
  d[name] = hypereca::EncapsulateHandler(Hypereca##stem##Cuda);
    HYPERECA_FOR_EACH_OP(HYPERECA_REGISTER_HANDLER)
#undef HYPERECA_REGISTER_HANDLER
    return d;
  });
  m.def("build_info", []() { return hypereca::BuildInfo("cuda"); });
  m.def("constants", []() { return hypereca::Constants(); });
}
