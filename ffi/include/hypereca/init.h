// Row initialization: value(seed, key, column) is a pure function, identical
// on CPU, CUDA and in the numpy twin (jax_hypereca/initializers.py).
//
//   z = Mix64(Mix64(seed ^ kInitSalt*kGolden) ^ key)
//   r_c = Mix64(z + (c + 1) * kGolden)                   (one per column c)
//   uniform:  k = r_c >> 40 (24 bits);  v = float(k - 2^23) * (scale * 2^-23)
//   normal:   k_j = 24-bit draws of Mix64(z + (c*12 + j + 1) * kGolden ^ kNormalSalt)
//             v = float(sum_j k_j - 6 * 2^24) * (scale * 2^-24)   (Irwin-Hall 12)
//   constant: v = scale
// Every intermediate is an exact integer; the int -> float conversion and the
// one multiply are correctly rounded, so results are bit-exact everywhere.
#pragma once

#include <cstdint>

#include "hypereca/common.h"
#include "hypereca/enums.h"
#include "hypereca/hash.h"

namespace hypereca {

constexpr uint64_t kNormalSalt = 0x4e4f524dull;  // "NORM"

HYPERECA_HD uint64_t RowSeed(uint64_t seed, int64_t key) {
  return Mix64(Mix64(seed ^ (kInitSalt * kGolden)) ^ static_cast<uint64_t>(key));
}

HYPERECA_HD float InitValue(uint64_t row_seed, uint32_t column, InitKind kind,
                            float scale) {
  switch (kind) {
    case InitKind::kUniform: {
      const uint64_t r = Mix64(row_seed + (static_cast<uint64_t>(column) + 1) * kGolden);
      const int32_t k = static_cast<int32_t>(r >> 40) - (1 << 23);
      return static_cast<float>(k) * (scale * 0x1p-23f);
    }
    case InitKind::kNormal: {
      int64_t sum = 0;
      for (uint32_t j = 0; j < 12; ++j) {
        const uint64_t r = Mix64(
            (row_seed + (static_cast<uint64_t>(column) * 12 + j + 1) * kGolden) ^
            kNormalSalt);
        sum += static_cast<int64_t>(r >> 40);
      }
      sum -= int64_t{6} << 24;
      return static_cast<float>(sum) * (scale * 0x1p-24f);
    }
    case InitKind::kConstant:
    default:
      return scale;
  }
}

}  // namespace hypereca
