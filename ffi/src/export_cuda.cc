// export on CUDA: the XLA FFI handler (checks, launch of export_kernels.cu).
// Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error ExportImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                      ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                      ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
                      ffi::BufferR1<ffi::S64> freq, ffi::BufferR0<ffi::S64> cursor,
                      ffi::BufferR0<ffi::S64> threshold, ffi::ResultBufferR1<ffi::S64> out_keys,
                      ffi::Result<ffi::AnyBuffer> out_values,
                      ffi::ResultBufferR2<ffi::F32> out_opt,
                      ffi::ResultBufferR1<ffi::S64> out_last,
                      ffi::ResultBufferR1<ffi::S64> out_freq,
                      ffi::ResultBufferR1<ffi::S64> info, int32_t mode, int32_t policy) {
  constexpr const char* kOp = "hypereca_export";
  auto shape_or = CheckExport(keys, values, opt, last, freq, out_keys, out_values, out_opt,
                              out_last, out_freq, info, mode, policy);
  if (shape_or.has_error()) return shape_or.error();
  const ExportShape shape = shape_or.value();
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  if (auto err = CheckIndexRange(kOp, shape.capacity, "table rows"); err.failure()) return err;
  if (auto err = CheckIndexRange(kOp, shape.chunk, "exported rows"); err.failure()) return err;
  ExportArgs a;
  a.keys = keys.typed_data();
  a.values = values.untyped_data();
  a.opt = opt.typed_data();
  a.last_step = last.typed_data();
  a.freq = freq.typed_data();
  a.capacity = shape.capacity;
  a.dim = shape.dim;
  a.width = shape.width;
  a.value_type = *vt;
  a.cursor = cursor.typed_data();
  a.threshold = threshold.typed_data();
  a.mode = mode;
  a.policy = policy;
  a.chunk = shape.chunk;
  a.out_keys = out_keys->typed_data();
  a.out_values = out_values->untyped_data();
  a.out_opt = out_opt->typed_data();
  a.out_last = out_last->typed_data();
  a.out_freq = out_freq->typed_data();
  a.info = info->typed_data();
  return LaunchWithScratch(kOp, a, scratch, stream, ExportScratchBytes, Export);
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaExportCuda, hypereca::cuda::ExportImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values     (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (C,)
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()   // cursor     () first slot to scan
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()   // threshold  () for the predicate
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (M,) kEmptyKey past count
        .Ret<xla::ffi::AnyBuffer>()                 // values     (M, D)
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (M, K)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (M,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (M,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // info       (2,) count, next cursor
        .Attr<int32_t>("mode")                      // ExportMode
        .Attr<int32_t>("policy"));                  // ScorePolicy: which score is compared
// clang-format on
