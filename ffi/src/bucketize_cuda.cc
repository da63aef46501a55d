// bucketize on CUDA: the XLA FFI handler (checks, launch of
// bucketize_kernels.cu). Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error BucketizeImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                         ffi::BufferR1<ffi::S64> keys, ffi::ResultBufferR2<ffi::S64> send,
                         ffi::ResultBufferR1<ffi::S32> counts,
                         ffi::ResultBufferR1<ffi::S32> position) {
  if (auto err = CheckBucketize(keys, send, counts, position); err.failure()) return err;
  BucketizeArgs a;
  a.keys = keys.typed_data();
  a.n = keys.dimensions()[0];
  a.shards = send->dimensions()[0];
  a.cap = send->dimensions()[1];
  a.send = send->typed_data();
  a.counts = counts->typed_data();
  a.position = position->typed_data();
  return LaunchWithScratch("hypereca_bucketize", a, scratch, stream, BucketizeScratchBytes,
                           Bucketize);
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaBucketizeCuda, hypereca::cuda::BucketizeImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys     (n,)
        .Ret<xla::ffi::BufferR2<xla::ffi::S64>>()   // send     (W, cap) kEmptyKey padded
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // counts   (W,) true counts, may exceed cap
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()); // position (n,) d*cap+j, -1: padding/overflow
// clang-format on
