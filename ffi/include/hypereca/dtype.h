// Storage dtypes of table values: float32 and bfloat16 (math is float32).
#pragma once

#include <cstdint>
#include <cstring>

#include "hypereca/common.h"

namespace hypereca {

// bfloat16 as its raw bits (the FFI hands BF16 buffers over as uint16_t).
struct Bf16 {
  uint16_t bits;
};

HYPERECA_HD float ToF32(float x) { return x; }
HYPERECA_HD float ToF32(Bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

template <typename T>
HYPERECA_HD T FromF32(float x);

template <>
HYPERECA_HD float FromF32<float>(float x) { return x; }

// Round to nearest even; NaN stays NaN (quiet).
template <>
HYPERECA_HD Bf16 FromF32<Bf16>(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>((u + rounding) >> 16)};
}

}  // namespace hypereca
