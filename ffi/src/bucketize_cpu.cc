// bucketize on CPU: routes keys to their owner shard (OwnerOf, the one owner
// hash) into fixed-capacity send buffers, keeping query order per owner.
// counts holds the true per-owner counts even past the capacity, so the caller
// sees an overflow with its size before anything is updated.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/hash.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error BucketizeImpl(ffi::BufferR1<ffi::S64> keys, ffi::ResultBufferR2<ffi::S64> send,
                         ffi::ResultBufferR1<ffi::S32> counts,
                         ffi::ResultBufferR1<ffi::S32> position) {
  if (auto err = CheckBucketize(keys, send, counts, position); err.failure()) return err;
  const int64_t n = keys.dimensions()[0];
  const int64_t shards = send->dimensions()[0], cap = send->dimensions()[1];
  const int64_t* k = keys.typed_data();
  int64_t* out = send->typed_data();
  int32_t* cnt = counts->typed_data();
  int32_t* pos = position->typed_data();
  std::fill(out, out + shards * cap, kEmptyKey);
  std::vector<int64_t> c(shards, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t key = k[i];
    if (key == kPaddingKey) {
      pos[i] = -1;
      continue;
    }
    const uint32_t d = OwnerOf(key, static_cast<uint32_t>(shards));
    const int64_t j = c[d]++;
    if (j < cap) {
      out[d * cap + j] = key;
      pos[i] = static_cast<int32_t>(d * cap + j);
    } else {
      pos[i] = -1;
    }
  }
  for (int64_t d = 0; d < shards; ++d) {
    cnt[d] = static_cast<int32_t>(std::min<int64_t>(c[d], INT32_MAX));
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaBucketizeCpu, hypereca::cpu::BucketizeImpl,
    xla::ffi::Ffi::Bind()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys     (n,)
        .Ret<xla::ffi::BufferR2<xla::ffi::S64>>()   // send     (W, cap) kEmptyKey padded
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // counts   (W,) true counts, may exceed cap
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()); // position (n,) d*cap+j, -1: padding/overflow
// clang-format on
