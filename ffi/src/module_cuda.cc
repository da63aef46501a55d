// The CUDA extension module: FFI handler capsules of the CUDA custom calls for
// jax.ffi.register_ffi_target(..., platform="CUDA"), the build's jaxlib / FFI
// API versions and the table format's constants (the same as the CPU
// module's). Only the ops with a CUDA implementation are listed.
#include <nanobind/nanobind.h>

#include "hypereca/common.h"
#include "module_common.h"
#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* HyperecaFindOrInsertCuda(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaFindCuda(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaGatherCuda(XLA_FFI_CallFrame*);
}

namespace nb = nanobind;

NB_MODULE(_hypereca_cuda, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["hypereca_find_or_insert"] = hypereca::EncapsulateHandler(HyperecaFindOrInsertCuda);
    d["hypereca_find"] = hypereca::EncapsulateHandler(HyperecaFindCuda);
    d["hypereca_gather"] = hypereca::EncapsulateHandler(HyperecaGatherCuda);
    return d;
  });
  m.def("build_info", []() { return hypereca::BuildInfo("cuda"); });
  m.def("constants", []() { return hypereca::Constants(); });
}
