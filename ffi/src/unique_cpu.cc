// unique on CPU: distinct keys in first-occurrence order with the inverse map,
// fixed-size outputs (padded with kEmptyKey). Padding ids are not keys: their
// inverse is -1.
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

ffi::Error UniqueImpl(ffi::BufferR1<ffi::S64> keys, ffi::ResultBufferR1<ffi::S64> uniq,
                      ffi::ResultBufferR1<ffi::S32> inverse,
                      ffi::ResultBufferR0<ffi::S32> count) {
  if (auto err = CheckUnique(keys, uniq, inverse); err.failure()) return err;
  const int64_t n = keys.dimensions()[0];
  const int64_t* k = keys.typed_data();
  int64_t* u = uniq->typed_data();
  int32_t* inv = inverse->typed_data();
  int64_t size = 16;
  while (size < 2 * n) size <<= 1;
  int shift = 64;
  for (int64_t t = size; t > 1; t >>= 1) --shift;
  std::vector<int32_t> table(size, -1);  // index into u
  int32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t key = k[i];
    if (key == kPaddingKey) {
      inv[i] = -1;
      continue;
    }
    uint64_t h = Mix64(static_cast<uint64_t>(key)) >> shift;
    for (;; h = (h + 1) & (size - 1)) {
      const int32_t j = table[h];
      if (j < 0) {
        table[h] = m;
        u[m] = key;
        inv[i] = m++;
        break;
      }
      if (u[j] == key) {
        inv[i] = j;
        break;
      }
    }
  }
  std::fill(u + m, u + n, kEmptyKey);
  *count->typed_data() = m;
  return ffi::Error::Success();
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaUniqueCpu, hypereca::cpu::UniqueImpl,
    xla::ffi::Ffi::Bind()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys    (n,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // unique  (n,) first-occurrence order, kEmptyKey past count
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // inverse (n,) keys[i] == unique[inverse[i]]; -1 for padding
        .Ret<xla::ffi::BufferR0<xla::ffi::S32>>()); // count   ()
// clang-format on
