// find on CUDA: the XLA FFI handler (checks, launch of find_kernels.cu).
// Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "hypereca/probe.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error FindImpl(cudaStream_t stream, ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                    ffi::BufferR1<ffi::S64> query, ffi::Result<ffi::AnyBuffer> rows,
                    ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::PRED> found,
                    int64_t seed, int32_t init_kind, float init_scale, int64_t bucket_size,
                    bool miss_init) {
  constexpr const char* kOp = "hypereca_find";
  bool want_rows = true;
  auto g_or = CheckFind(keys, values, query, rows, bucket_size, init_kind, &want_rows);
  if (g_or.has_error()) return g_or.error();
  const TableGeometry g = g_or.value();
  auto vd = values.dimensions();
  const int64_t n = query.dimensions()[0];
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  FindArgs a;
  a.keys = keys.typed_data();
  a.values = values.untyped_data();
  a.capacity = g.capacity;
  a.bucket_size = g.bucket_size;
  a.num_buckets = g.num_buckets;
  a.dim = vd[1];
  a.value_type = *vt;
  a.query = query.typed_data();
  a.n = n;
  a.seed = static_cast<uint64_t>(seed);
  a.init_kind = init_kind;
  a.init_scale = init_scale;
  a.miss_init = miss_init;
  a.want_rows = want_rows;
  a.rows = rows->untyped_data();
  a.slots = slots->typed_data();
  a.found = found->typed_data();
  const LaunchStatus s = Find(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaFindCuda, hypereca::cuda::FindImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys    (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values  (C, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // query   (n,)
        .Ret<xla::ffi::AnyBuffer>()                 // rows    (n, D), or (0, D): slots and found only
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // slots   (n,) -1 on a miss
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()  // found   (n,)
        .Attr<int64_t>("seed")                      // table seed (miss_init)
        .Attr<int32_t>("init_kind")                 // InitKind (miss_init)
        .Attr<float>("init_scale")                  // initializer scale (miss_init)
        .Attr<int64_t>("bucket_size")               // slots per bucket
        .Attr<bool>("miss_init"));                  // misses get their would-be initial row
// clang-format on
