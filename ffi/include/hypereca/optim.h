// Fused sparse optimizer math for one row: value w[dim] (storage type T),
// optimizer state s[StateWidth] (float32), summed gradient g[dim] (float32).
// XLA-free; host and device. The Python twin of these formulas lives in
// jax_hypereca/optim.py (state widths) and the tests' numpy references.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#include "hypereca/common.h"
#include "hypereca/dtype.h"

namespace hypereca {

// Floats of optimizer state stored beside each row.
HYPERECA_HD int64_t StateWidth(OptimizerKind kind, int64_t dim) {
  switch (kind) {
    case OptimizerKind::kSgd: return 0;
    case OptimizerKind::kAdagrad: return dim;             // accumulator
    case OptimizerKind::kRowwiseAdagrad: return 1;        // row accumulator
    case OptimizerKind::kAdam: return 2 * dim + 1;        // m, v, step count
    case OptimizerKind::kFtrl: return 2 * dim;            // z, n
  }
  return -1;
}

HYPERECA_HD bool IsValidOptimizer(int32_t kind) { return kind >= 0 && kind <= 4; }

// Finite check on the bits, identical on host and device and immune to
// -ffast-math style assumptions.
HYPERECA_HD bool IsFinite(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  return (u & 0x7f800000u) != 0x7f800000u;
}

HYPERECA_HD bool AllFinite(const float* g, int64_t dim) {
  for (int64_t i = 0; i < dim; ++i) {
    if (!IsFinite(g[i])) return false;
  }
  return true;
}

// Applies one update. The caller has checked that g is finite.
//   SGD:              w -= lr * (g + wd*w)
//   Adagrad:          a += g^2;  w -= lr * (g / sqrt(a + eps) + wd*w)      (optax)
//   row-wise Adagrad: a += mean(g^2);  w -= lr * (g / (sqrt(a) + eps) + wd*w) (FBGEMM)
//   Adam:             t += 1; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//                     w -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd*w)
//   FTRL (lr_power -1/2, Keras): n' = n + g^2; z += g - (sqrt(n') - sqrt(n))/lr * w;
//                     w = |z| <= l1 ? 0 : -(z - sign(z) l1) / ((beta + sqrt(n'))/lr + 2 l2)
template <typename T>
HYPERECA_HD void UpdateRow(OptimizerKind kind, const float* hp, int64_t dim,
                           T* w, float* s, const float* g) {
  const float lr = hp[kLr];
  const float wd = hp[kWeightDecay];
  switch (kind) {
    case OptimizerKind::kSgd: {
      for (int64_t i = 0; i < dim; ++i) {
        const float wi = ToF32(w[i]);
        w[i] = FromF32<T>(wi - lr * (g[i] + wd * wi));
      }
      break;
    }
    case OptimizerKind::kAdagrad: {
      const float eps = hp[kEps];
      for (int64_t i = 0; i < dim; ++i) {
        const float a = s[i] + g[i] * g[i];
        s[i] = a;
        const float wi = ToF32(w[i]);
        w[i] = FromF32<T>(wi - lr * (g[i] / sqrtf(a + eps) + wd * wi));
      }
      break;
    }
    case OptimizerKind::kRowwiseAdagrad: {
      const float eps = hp[kEps];
      float sq = 0.f;
      for (int64_t i = 0; i < dim; ++i) sq += g[i] * g[i];
      const float a = s[0] + sq / static_cast<float>(dim);
      s[0] = a;
      const float mult = 1.f / (sqrtf(a) + eps);
      for (int64_t i = 0; i < dim; ++i) {
        const float wi = ToF32(w[i]);
        w[i] = FromF32<T>(wi - lr * (g[i] * mult + wd * wi));
      }
      break;
    }
    case OptimizerKind::kAdam: {
      const float b1 = hp[kBeta1], b2 = hp[kBeta2], eps = hp[kEps];
      float* m = s;
      float* v = s + dim;
      const float t = s[2 * dim] + 1.f;
      s[2 * dim] = t;
      const float bc1 = 1.f - powf(b1, t);
      const float bc2 = 1.f - powf(b2, t);
      for (int64_t i = 0; i < dim; ++i) {
        const float mi = b1 * m[i] + (1.f - b1) * g[i];
        const float vi = b2 * v[i] + (1.f - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        const float wi = ToF32(w[i]);
        const float u = (mi / bc1) / (sqrtf(vi / bc2) + eps);
        w[i] = FromF32<T>(wi - lr * (u + wd * wi));
      }
      break;
    }
    case OptimizerKind::kFtrl: {
      const float l1 = hp[kL1], l2 = hp[kL2], beta = hp[kBeta];
      float* z = s;
      float* n = s + dim;
      for (int64_t i = 0; i < dim; ++i) {
        const float wi = ToF32(w[i]);
        const float n_new = n[i] + g[i] * g[i];
        const float sigma = (sqrtf(n_new) - sqrtf(n[i])) / lr;
        const float zi = z[i] + g[i] - sigma * wi;
        z[i] = zi;
        n[i] = n_new;
        float w_new = 0.f;
        if (fabsf(zi) > l1) {
          const float sign = zi > 0.f ? 1.f : -1.f;
          w_new = -(zi - sign * l1) / ((beta + sqrtf(n_new)) / lr + 2.f * l2);
        }
        w[i] = FromF32<T>(w_new);
      }
      break;
    }
  }
}

}  // namespace hypereca
