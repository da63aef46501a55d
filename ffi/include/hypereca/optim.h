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
#include "hypereca/enums.h"

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

// One update is split into a per-row part and a per-column part so that the CPU
// (one thread per row) and the GPU (one lane per column) run the same
// formulas:
//   SGD:              w -= lr * (g + wd*w)
//   Adagrad:          a += g^2;  w -= lr * (g / sqrt(a + eps) + wd*w)      (optax)
//   row-wise Adagrad: a += mean(g^2);  w -= lr * (g / (sqrt(a) + eps) + wd*w) (FBGEMM)
//   Adam:             t += 1; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//                     w -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd*w)
//   FTRL (lr_power -1/2, Keras): n' = n + g^2; z += g - (sqrt(n') - sqrt(n))/lr * w;
//                     w = |z| <= l1 ? 0 : -(z - sign(z) l1) / ((beta + sqrt(n'))/lr + 2 l2)

// The per-row quantities of one update: computed from the row's state before
// the update (RowUpdateOf), stored back by CommitRow after the columns.
struct RowUpdate {
  float rowwise_acc = 0.f;   // row-wise Adagrad: new accumulator
  float rowwise_mult = 0.f;  // row-wise Adagrad: 1 / (sqrt(acc) + eps)
  float adam_t = 0.f;        // Adam: new step count
  float adam_bc1 = 0.f;      // Adam: 1 - b1^t
  float adam_bc2 = 0.f;      // Adam: 1 - b2^t
};

// Needs only the summed squares of the row's gradient (row-wise Adagrad; any
// value for the other optimizers). Reads the state, writes nothing.
HYPERECA_HD RowUpdate RowUpdateOf(OptimizerKind kind, const float* hp, int64_t dim,
                                  const float* s, float grad_sq_sum) {
  RowUpdate r;
  if (kind == OptimizerKind::kRowwiseAdagrad) {
    r.rowwise_acc = s[0] + grad_sq_sum / static_cast<float>(dim);
    r.rowwise_mult = 1.f / (sqrtf(r.rowwise_acc) + hp[kEps]);
  } else if (kind == OptimizerKind::kAdam) {
    r.adam_t = s[2 * dim] + 1.f;
    r.adam_bc1 = 1.f - powf(hp[kBeta1], r.adam_t);
    r.adam_bc2 = 1.f - powf(hp[kBeta2], r.adam_t);
  }
  return r;
}

// Stores the per-row state of the update (disjoint from the columns' state).
HYPERECA_HD void CommitRow(OptimizerKind kind, int64_t dim, float* s, const RowUpdate& r) {
  if (kind == OptimizerKind::kRowwiseAdagrad) s[0] = r.rowwise_acc;
  if (kind == OptimizerKind::kAdam) s[2 * dim] = r.adam_t;
}

// Updates column i of the row (value w[i] and its state) from gradient g.
template <typename T>
HYPERECA_HD void UpdateColumn(OptimizerKind kind, const float* hp, const RowUpdate& r,
                              int64_t dim, int64_t i, T* w, float* s, float g) {
  const float lr = hp[kLr];
  const float wd = hp[kWeightDecay];
  const float wi = ToF32(w[i]);
  switch (kind) {
    case OptimizerKind::kSgd:
      w[i] = FromF32<T>(wi - lr * (g + wd * wi));
      break;
    case OptimizerKind::kAdagrad: {
      const float a = s[i] + g * g;
      s[i] = a;
      w[i] = FromF32<T>(wi - lr * (g / sqrtf(a + hp[kEps]) + wd * wi));
      break;
    }
    case OptimizerKind::kRowwiseAdagrad:
      w[i] = FromF32<T>(wi - lr * (g * r.rowwise_mult + wd * wi));
      break;
    case OptimizerKind::kAdam: {
      const float b1 = hp[kBeta1], b2 = hp[kBeta2];
      const float mi = b1 * s[i] + (1.f - b1) * g;
      const float vi = b2 * s[dim + i] + (1.f - b2) * g * g;
      s[i] = mi;
      s[dim + i] = vi;
      const float u = (mi / r.adam_bc1) / (sqrtf(vi / r.adam_bc2) + hp[kEps]);
      w[i] = FromF32<T>(wi - lr * (u + wd * wi));
      break;
    }
    case OptimizerKind::kFtrl: {
      const float l1 = hp[kL1], l2 = hp[kL2], beta = hp[kBeta];
      const float n = s[dim + i];
      const float n_new = n + g * g;
      const float sigma = (sqrtf(n_new) - sqrtf(n)) / lr;
      const float zi = s[i] + g - sigma * wi;
      s[i] = zi;
      s[dim + i] = n_new;
      float w_new = 0.f;
      if (fabsf(zi) > l1) {
        const float sign = zi > 0.f ? 1.f : -1.f;
        w_new = -(zi - sign * l1) / ((beta + sqrtf(n_new)) / lr + 2.f * l2);
      }
      w[i] = FromF32<T>(w_new);
      break;
    }
  }
}

// Applies one update to a whole row. The caller has checked that g is finite.
template <typename T>
HYPERECA_HD void UpdateRow(OptimizerKind kind, const float* hp, int64_t dim,
                           T* w, float* s, const float* g) {
  float sq = 0.f;
  if (kind == OptimizerKind::kRowwiseAdagrad) {
    for (int64_t i = 0; i < dim; ++i) sq += g[i] * g[i];
  }
  const RowUpdate r = RowUpdateOf(kind, hp, dim, s, sq);
  for (int64_t i = 0; i < dim; ++i) UpdateColumn<T>(kind, hp, r, dim, i, w, s, g[i]);
  CommitRow(kind, dim, s, r);
}

}  // namespace hypereca
