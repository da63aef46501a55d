// apply_gradients on CPU: sums the gradient rows of duplicate slots exactly (in
// query order), then applies the fused optimizer to each touched row and its
// state. Rows whose summed gradient is not finite are left untouched and
// counted.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/optim.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

// The valid slots in [lo, hi) grouped by value, in first-occurrence order
// (CSR layout). Each task groups and updates its own slot range, so the sum of a
// slot's gradients runs in query order whatever the number of tasks.
struct SlotGroups {
  std::vector<int32_t> slot;     // (G,) slot of each group
  std::vector<int64_t> offsets;  // (G+1,)
  std::vector<int64_t> members;  // query indices, grouped, in query order
};

SlotGroups GroupSlots(const int32_t* slots, int64_t n, int64_t lo, int64_t hi) {
  SlotGroups out;
  int64_t in_range = 0;
  for (int64_t i = 0; i < n; ++i) in_range += slots[i] >= lo && slots[i] < hi;
  int64_t table_size = 16;
  while (table_size < 2 * in_range) table_size <<= 1;
  int shift = 64;
  for (int64_t t = table_size; t > 1; t >>= 1) --shift;
  std::vector<int32_t> hkeys(table_size, -1), hgroup(table_size, 0);
  std::vector<int32_t> group_of;
  std::vector<int64_t> index_of, counts;
  group_of.reserve(in_range);
  index_of.reserve(in_range);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = slots[i];
    if (s < lo || s >= hi) continue;
    uint64_t h = (static_cast<uint64_t>(static_cast<uint32_t>(s)) * 0x9E3779B97F4A7C15ull) >> shift;
    for (;; h = (h + 1) & (table_size - 1)) {
      if (hkeys[h] == s) break;
      if (hkeys[h] < 0) {
        hkeys[h] = s;
        hgroup[h] = static_cast<int32_t>(out.slot.size());
        out.slot.push_back(s);
        counts.push_back(0);
        break;
      }
    }
    group_of.push_back(hgroup[h]);
    index_of.push_back(i);
    counts[hgroup[h]]++;
  }
  const int64_t groups = static_cast<int64_t>(out.slot.size());
  out.offsets.assign(groups + 1, 0);
  for (int64_t g = 0; g < groups; ++g) out.offsets[g + 1] = out.offsets[g] + counts[g];
  out.members.resize(in_range);
  std::vector<int64_t> cursor(out.offsets.begin(), out.offsets.end() - 1);
  for (int64_t j = 0; j < in_range; ++j) out.members[cursor[group_of[j]]++] = index_of[j];
  return out;
}

// Sums each group's gradient rows and applies the optimizer; returns the number
// of rows skipped for non-finite gradients.
template <typename T>
int64_t ApplyGroups(const SlotGroups& groups, OptimizerKind kind, const float* hp,
                    int64_t dim, int64_t width, const float* grads, T* values, float* opt) {
  const int64_t G = static_cast<int64_t>(groups.slot.size());
  std::vector<float> sum(dim);
  int64_t skipped = 0;
  constexpr int64_t kAhead = 4;
  for (int64_t g = 0; g < G; ++g) {
    if (g + kAhead < G) {
      const int64_t s = groups.slot[g + kAhead];
      Prefetch(values + s * dim, dim * sizeof(T));
      Prefetch(grads + groups.members[groups.offsets[g + kAhead]] * dim, dim * 4);
      if (width > 0) Prefetch(opt + s * width, width * 4);
    }
    const int64_t m0 = groups.offsets[g], m1 = groups.offsets[g + 1];
    const float* row = grads + groups.members[m0] * dim;
    if (m1 - m0 > 1) {
      std::copy_n(row, dim, sum.data());
      for (int64_t m = m0 + 1; m < m1; ++m) {
        const float* r = grads + groups.members[m] * dim;
        for (int64_t c = 0; c < dim; ++c) sum[c] += r[c];
      }
      row = sum.data();
    }
    if (!AllFinite(row, dim)) {
      skipped++;
      continue;
    }
    const int64_t s = groups.slot[g];
    UpdateRow<T>(kind, hp, dim, values + s * dim, opt + s * width, row);
  }
  return skipped;
}

ffi::Error ApplyGradientsImpl(ffi::ThreadPool pool, ffi::AnyBuffer values,
                              ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> counters,
                              ffi::BufferR1<ffi::S32> slots, ffi::BufferR2<ffi::F32> grads,
                              ffi::BufferR1<ffi::F32> hparams,
                              ffi::Result<ffi::AnyBuffer> values_out,
                              ffi::ResultBufferR2<ffi::F32> opt_out,
                              ffi::ResultBufferR1<ffi::S64> counters_out,
                              ffi::ResultBufferR1<ffi::S64> status, int32_t optimizer) {
  constexpr const char* kOp = "hypereca_apply_gradients";
  auto shape_or = CheckApplyGradients(values, opt, counters, slots, grads, hparams, values_out,
                                      status, optimizer);
  if (shape_or.has_error()) return shape_or.error();
  const ApplyShape shape = shape_or.value();
  const int64_t capacity = shape.capacity, dim = shape.dim, width = shape.width;
  const OptimizerKind kind = shape.kind;
  const int64_t n = slots.dimensions()[0];
  AliasOutputs(values_out, values, opt_out, opt, counters_out, counters);
  int64_t* st = status->typed_data();
  std::fill(st, st + status->dimensions()[0], 0);

  const int32_t* sl = slots.typed_data();
  for (int64_t i = 0; i < n; ++i) st[kApBadSlots] += sl[i] != -1 && (sl[i] < 0 || sl[i] >= capacity);
  // Tasks own slot ranges; each scans the slots once, so keep them few.
  const int64_t tasks =
      std::max<int64_t>(1, std::min<int64_t>(pool.num_threads() + 1, n / (1 << 12)));
  std::vector<int64_t> unique_rows(tasks, 0), skipped(tasks, 0);
  ffi::Error err = DispatchValueType(values.element_type(), kOp, [&](auto tag) {
    using T = decltype(tag);
    ParallelFor(pool, tasks, [&](int64_t t) {
      int64_t lo, hi;
      TaskRange(capacity, tasks, t, &lo, &hi);
      const SlotGroups groups = GroupSlots(sl, n, lo, hi);
      unique_rows[t] = static_cast<int64_t>(groups.slot.size());
      skipped[t] = ApplyGroups<T>(groups, kind, hparams.typed_data(), dim, width,
                                  grads.typed_data(),
                                  reinterpret_cast<T*>(values_out->untyped_data()),
                                  opt_out->typed_data());
    });
    return ffi::Error::Success();
  });
  for (int64_t t = 0; t < tasks; ++t) {
    st[kApUniqueRows] += unique_rows[t];
    st[kApNonfinite] += skipped[t];
  }
  counters_out->typed_data()[kNonfiniteGrads] += st[kApNonfinite];
  return err;
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaApplyGradientsCpu, hypereca::cpu::ApplyGradientsImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
        .Arg<xla::ffi::AnyBuffer>()                  // values    (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters  (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()    // slots     (n,) -1 ignored
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // grads     (n, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::F32>>()    // hparams   (8,) see HParam
        .Ret<xla::ffi::AnyBuffer>()                  // values    aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // status    (4,) see ApplyStatus
        .Attr<int32_t>("optimizer"));                // OptimizerKind
// clang-format on
