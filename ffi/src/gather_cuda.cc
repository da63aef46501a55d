// gather and gather_tagged on CUDA: the XLA FFI handlers (checks, launches of
// gather_kernels.cu). Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error GatherImpl(cudaStream_t stream, ffi::AnyBuffer values,
                      ffi::BufferR1<ffi::S32> slots, ffi::Result<ffi::AnyBuffer> rows,
                      ffi::ResultBufferR0<ffi::S64> bad_slots) {
  constexpr const char* kOp = "hypereca_gather";
  auto vd = values.dimensions();
  const int64_t n = slots.dimensions()[0];
  if (vd.size() != 2 || rows->dimensions().size() != 2 || rows->dimensions()[0] != n ||
      rows->dimensions()[1] != vd[1] || rows->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_gather: rows must be (n, dim) of the table's dtype");
  }
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  GatherArgs a;
  a.values = values.untyped_data();
  a.capacity = vd[0];
  a.dim = vd[1];
  a.value_type = *vt;
  a.slots = slots.typed_data();
  a.n = n;
  a.rows = rows->untyped_data();
  a.bad_slots = bad_slots->typed_data();
  const LaunchStatus s = Gather(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- gather_tagged
ffi::Error GatherTaggedImpl(cudaStream_t stream, ffi::BufferR1<ffi::S32> tags,
                            ffi::BufferR1<ffi::S32> slots, ffi::RemainingArgs tables,
                            ffi::Result<ffi::AnyBuffer> rows) {
  constexpr const char* kOp = "hypereca_gather_tagged";
  std::vector<const void*> base;
  std::vector<int64_t> capacity;
  if (auto err = CheckGatherTagged(tags, slots, tables, rows, &base, &capacity);
      err.failure()) {
    return err;
  }
  const std::optional<ValueType> vt = ValueTypeOf(rows->element_type());
  if (!vt) return BadValueType(kOp);
  GatherTaggedArgs a;
  a.tables = base.data();
  a.capacities = capacity.data();
  a.num_tables = static_cast<int64_t>(base.size());
  a.dim = rows->dimensions()[1];
  a.value_type = *vt;
  a.tags = tags.typed_data();
  a.slots = slots.typed_data();
  a.n = slots.dimensions()[0];
  a.rows = rows->untyped_data();
  const LaunchStatus s = GatherTagged(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaGatherCuda, hypereca::cuda::GatherImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::AnyBuffer>()                // values (C, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,) -1: no row (zeros)
        .Ret<xla::ffi::AnyBuffer>()                // rows   (n, D)
        .Ret<xla::ffi::BufferR0<xla::ffi::S64>>());  // bad_slots () outside [-1, C): zeros

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaGatherTaggedCuda, hypereca::cuda::GatherTaggedImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // tags   (n,) table of each row, -1: none
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,)
        .RemainingArgs()                           // values of each table (C_t, D)
        .Ret<xla::ffi::AnyBuffer>());              // rows   (n, D)
// clang-format on
