// import_rows on CUDA: the XLA FFI handler (checks, table copies, launch of
// import_kernels.cu). Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error ImportImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                      ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                      ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
                      ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
                      ffi::BufferR1<ffi::S64> in_keys, ffi::AnyBuffer in_values,
                      ffi::BufferR2<ffi::F32> in_opt, ffi::BufferR1<ffi::S64> in_last,
                      ffi::BufferR1<ffi::S64> in_freq, ffi::ResultBufferR1<ffi::S64> keys_out,
                      ffi::Result<ffi::AnyBuffer> values_out,
                      ffi::ResultBufferR2<ffi::F32> opt_out,
                      ffi::ResultBufferR1<ffi::S64> last_out,
                      ffi::ResultBufferR1<ffi::S64> freq_out,
                      ffi::ResultBufferR1<ffi::S64> counters_out,
                      ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::S64> status,
                      int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_import_rows";
  auto shape_or = CheckTable(kOp, bucket_size, keys, values, opt, last, freq, counters);
  if (shape_or.has_error()) return shape_or.error();
  const TableShape shape = shape_or.value();
  if (auto err = CheckImport(shape, values, in_keys, in_values, in_opt, in_last, in_freq, slots,
                             status);
      err.failure()) {
    return err;
  }
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  if (values_out->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_import_rows: value dtypes disagree");
  }
  const int64_t n = in_keys.dimensions()[0];
  if (auto err = CheckIndexRange(kOp, n, "rows"); err.failure()) return err;
  for (const LaunchStatus& s :
       {CopyIfDistinct(values_out->untyped_data(), values.untyped_data(), values.size_bytes(),
                       stream),
        CopyIfDistinct(opt_out->typed_data(), opt.typed_data(), opt.size_bytes(), stream)}) {
    if (!s.ok()) return CudaFailure(kOp, s);
  }
  auto meta = MetaOutputs(kOp, shape.geometry, keys, last, freq, counters, keys_out, last_out,
                          freq_out, counters_out, stream);
  if (meta.has_error()) return meta.error();
  ImportArgs a;
  a.table = meta.value();
  a.values = values_out->untyped_data();
  a.opt = opt_out->typed_data();
  a.dim = shape.dim;
  a.width = shape.state_width;
  a.value_type = *vt;
  a.in_keys = in_keys.typed_data();
  a.in_values = in_values.untyped_data();
  a.in_opt = in_opt.typed_data();
  a.in_last = in_last.typed_data();
  a.in_freq = in_freq.typed_data();
  a.n = n;
  a.slots = slots->typed_data();
  a.status = status->typed_data();
  a.status_len = status->dimensions()[0];
  return LaunchWithScratch(kOp, a, scratch, stream, ImportScratchBytes, Import);
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaImportRowsCuda, hypereca::cuda::ImportImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values     (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters   (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row keys   (n,) sentinels skipped
        .Arg<xla::ffi::AnyBuffer>()                 // row values (n, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // row state  (n, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row last_step (n,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row freq   (n,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       aliased
        .Ret<xla::ffi::AnyBuffer>()                 // values     aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters   aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // slots      (n,) -1: sentinel or refused
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // status     (4,) see ImportStatus
        .Attr<int64_t>("bucket_size"));             // slots per bucket
// clang-format on
