// The CPU extension module: FFI handler capsules for jax.ffi.register_ffi_target,
// the build's jaxlib / FFI API versions, and the constants of the table format
// (so Python never retypes them).
#include <nanobind/nanobind.h>

#include <cstdint>

#include "hypereca/common.h"
#include "module_common.h"
#include "xla/ffi/api/c_api.h"
#include "xla/ffi/api/ffi.h"

extern "C" {
XLA_FFI_Error* HyperecaFindOrInsertCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaFindCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaGatherCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaGatherTaggedCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaApplyGradientsCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaEraseCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaEraseIfCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaExportCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaImportRowsCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaUniqueCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* HyperecaBucketizeCpu(XLA_FFI_CallFrame*);
}

namespace nb = nanobind;

NB_MODULE(_hypereca_cpu, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["hypereca_find_or_insert"] = hypereca::EncapsulateHandler(HyperecaFindOrInsertCpu);
    d["hypereca_find"] = hypereca::EncapsulateHandler(HyperecaFindCpu);
    d["hypereca_gather"] = hypereca::EncapsulateHandler(HyperecaGatherCpu);
    d["hypereca_gather_tagged"] = hypereca::EncapsulateHandler(HyperecaGatherTaggedCpu);
    d["hypereca_apply_gradients"] = hypereca::EncapsulateHandler(HyperecaApplyGradientsCpu);
    d["hypereca_erase"] = hypereca::EncapsulateHandler(HyperecaEraseCpu);
    d["hypereca_erase_if"] = hypereca::EncapsulateHandler(HyperecaEraseIfCpu);
    d["hypereca_export"] = hypereca::EncapsulateHandler(HyperecaExportCpu);
    d["hypereca_import_rows"] = hypereca::EncapsulateHandler(HyperecaImportRowsCpu);
    d["hypereca_unique"] = hypereca::EncapsulateHandler(HyperecaUniqueCpu);
    d["hypereca_bucketize"] = hypereca::EncapsulateHandler(HyperecaBucketizeCpu);
    return d;
  });
  m.def("build_info", []() { return hypereca::BuildInfo("cpu"); });
  m.def("constants", []() { return hypereca::Constants(); });
}
