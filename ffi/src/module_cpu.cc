// The CPU extension module: FFI handler capsules for jax.ffi.register_ffi_target,
// the build's jaxlib / FFI API versions, and the constants of the table format
// (so Python never retypes them), and the host tier's store (HostStore).
#include <nanobind/nanobind.h>

#include <cstdint>

#include "hypereca/common.h"
#include "host_store_bindings.h"
#include "module_common.h"
#include "xla/ffi/api/c_api.h"
#include "xla/ffi/api/ffi.h"

#define HYPERECA_DECLARE_HANDLER(stem, name) \
  XLA_FFI_Error* Hypereca##stem##Cpu(XLA_FFI_CallFrame*);
extern "C" {
HYPERECA_FOR_EACH_OP(HYPERECA_DECLARE_HANDLER)
}
#undef HYPERECA_DECLARE_HANDLER

namespace nb = nanobind;

NB_MODULE(_hypereca_cpu, m) {
  m.def("registrations", []() {
    nb::dict d;
#define HYPERECA_REGISTER_HANDLER(stem, name) \
  d[name] = hypereca::EncapsulateHandler(Hypereca##stem##Cpu);
    HYPERECA_FOR_EACH_OP(HYPERECA_REGISTER_HANDLER)
#undef HYPERECA_REGISTER_HANDLER
    return d;
  });
  m.def("build_info", []() { return hypereca::BuildInfo("cpu"); });
  m.def("constants", []() { return hypereca::Constants(); });
  hypereca::BindHostStore(m);
}
