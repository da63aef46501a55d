// erase and erase_if on CUDA: the XLA FFI handlers (checks, table copies,
// launches of erase_kernels.cu). Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error EraseImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                     ffi::BufferR1<ffi::S64> keys, ffi::BufferR1<ffi::S64> last,
                     ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
                     ffi::BufferR1<ffi::S64> query, ffi::ResultBufferR1<ffi::S64> keys_out,
                     ffi::ResultBufferR1<ffi::S64> last_out,
                     ffi::ResultBufferR1<ffi::S64> freq_out,
                     ffi::ResultBufferR1<ffi::S64> counters_out,
                     ffi::ResultBufferR1<ffi::PRED> erased, int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_erase";
  auto g_or = CheckTableMeta(kOp, bucket_size, keys, last, freq, counters);
  if (g_or.has_error()) return g_or.error();
  const int64_t n = query.dimensions()[0];
  if (auto err = CheckIndexRange(kOp, n, "keys"); err.failure()) return err;
  auto meta = MetaOutputs(kOp, g_or.value(), keys, last, freq, counters, keys_out, last_out,
                          freq_out, counters_out, stream);
  if (meta.has_error()) return meta.error();
  EraseArgs a;
  a.table = meta.value();
  a.query = query.typed_data();
  a.n = n;
  a.erased = erased->typed_data();
  return LaunchWithScratch(kOp, a, scratch, stream, EraseScratchBytes, Erase);
}

ffi::Error EraseIfImpl(cudaStream_t stream, ffi::BufferR1<ffi::S64> keys,
                       ffi::BufferR1<ffi::S64> last, ffi::BufferR1<ffi::S64> freq,
                       ffi::BufferR1<ffi::S64> counters, ffi::BufferR0<ffi::S64> threshold,
                       ffi::ResultBufferR1<ffi::S64> keys_out,
                       ffi::ResultBufferR1<ffi::S64> last_out,
                       ffi::ResultBufferR1<ffi::S64> freq_out,
                       ffi::ResultBufferR1<ffi::S64> counters_out,
                       ffi::ResultBufferR0<ffi::S64> erased, int64_t bucket_size,
                       int32_t mode, int32_t policy) {
  constexpr const char* kOp = "hypereca_erase_if";
  auto g_or = CheckTableMeta(kOp, bucket_size, keys, last, freq, counters);
  if (g_or.has_error()) return g_or.error();
  if (auto err = CheckModeAndPolicy(kOp, mode, policy); err.failure()) return err;
  auto meta = MetaOutputs(kOp, g_or.value(), keys, last, freq, counters, keys_out, last_out,
                          freq_out, counters_out, stream);
  if (meta.has_error()) return meta.error();
  EraseIfArgs a;
  a.table = meta.value();
  a.threshold = threshold.typed_data();
  a.mode = mode;
  a.policy = policy;
  a.erased = erased->typed_data();
  const LaunchStatus s = EraseIf(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaEraseCuda, hypereca::cuda::EraseImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // query     (n,) keys to erase
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()  // erased    (n,) key was resident
        .Attr<int64_t>("bucket_size"));             // slots per bucket

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaEraseIfCuda, hypereca::cuda::EraseIfImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  (16,)
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()   // threshold ()
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  aliased
        .Ret<xla::ffi::BufferR0<xla::ffi::S64>>()   // erased    () rows removed
        .Attr<int64_t>("bucket_size")               // slots per bucket
        .Attr<int32_t>("mode")                      // ExportMode (kAll erases everything)
        .Attr<int32_t>("policy"));                  // ScorePolicy: which score is compared
// clang-format on
