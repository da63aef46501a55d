// apply_gradients on CUDA: the XLA FFI handler (checks, table copies, launch
// of apply_gradients_kernels.cu). Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error ApplyGradientsImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                              ffi::AnyBuffer values, ffi::BufferR2<ffi::F32> opt,
                              ffi::BufferR1<ffi::S64> counters, ffi::BufferR1<ffi::S32> slots,
                              ffi::BufferR2<ffi::F32> grads, ffi::BufferR1<ffi::F32> hparams,
                              ffi::Result<ffi::AnyBuffer> values_out,
                              ffi::ResultBufferR2<ffi::F32> opt_out,
                              ffi::ResultBufferR1<ffi::S64> counters_out,
                              ffi::ResultBufferR1<ffi::S64> status, int32_t optimizer) {
  constexpr const char* kOp = "hypereca_apply_gradients";
  auto shape_or = CheckApplyGradients(values, opt, counters, slots, grads, hparams, values_out,
                                      status, optimizer);
  if (shape_or.has_error()) return shape_or.error();
  const ApplyShape shape = shape_or.value();
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  const int64_t n = slots.dimensions()[0];
  if (auto err = CheckIndexRange(kOp, n, "gradient rows"); err.failure()) return err;
  if (auto err = CheckIndexRange(kOp, shape.capacity, "table rows"); err.failure()) return err;
  for (const LaunchStatus& s :
       {CopyIfDistinct(values_out->untyped_data(), values.untyped_data(), values.size_bytes(),
                       stream),
        CopyIfDistinct(opt_out->typed_data(), opt.typed_data(), opt.size_bytes(), stream),
        CopyIfDistinct(counters_out->typed_data(), counters.typed_data(),
                       counters.size_bytes(), stream)}) {
    if (!s.ok()) return CudaFailure(kOp, s);
  }
  ApplyGradientsArgs a;
  a.values = values_out->untyped_data();
  a.opt = opt_out->typed_data();
  a.counters = counters_out->typed_data();
  a.capacity = shape.capacity;
  a.dim = shape.dim;
  a.width = shape.width;
  a.value_type = *vt;
  a.optimizer = optimizer;
  a.slots = slots.typed_data();
  a.grads = grads.typed_data();
  a.n = n;
  a.hparams = hparams.typed_data();
  a.status = status->typed_data();
  a.status_len = status->dimensions()[0];
  return LaunchWithScratch(kOp, a, scratch, stream, ApplyGradientsScratchBytes,
                           ApplyGradients);
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaApplyGradientsCuda, hypereca::cuda::ApplyGradientsImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::AnyBuffer>()                  // values    (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters  (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()    // slots     (n,) -1 ignored
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // grads     (n, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::F32>>()    // hparams   (8,) see HParam
        .Ret<xla::ffi::AnyBuffer>()                  // values    aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // status    (4,) see ApplyStatus
        .Attr<int32_t>("optimizer"));                // OptimizerKind
// clang-format on
