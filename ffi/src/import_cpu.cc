// import_rows on CPU: upserts whole rows (key, values, optimizer state,
// scores) into a table. grow is an import of every slot of the old table into
// a larger empty one; checkpoint restore, re-sharding and tier moves use it
// too. It never evicts: a row that finds its bucket full is refused, counted,
// and stays with the caller (status), so nothing is lost.
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/probe.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {


template <typename T>
void ImportRange(const TableShape& shape, const int64_t* order, int64_t begin, int64_t end,
                 const int64_t* in_keys, const T* in_values, const float* in_opt,
                 const int64_t* in_last, const int64_t* in_freq, int64_t* keys, T* values,
                 float* opt, int64_t* last, int64_t* freq, int32_t* slots,
                 int64_t* status) {
  const int64_t dim = shape.dim, width = shape.state_width;
  for (int64_t j = begin; j < end; ++j) {
    const int64_t i = order ? order[j] : j;
    const int64_t key = in_keys[i];
    slots[i] = -1;
    if (IsReserved(key)) continue;
    status[kImRows]++;
    // pin_from = INT64_MIN: every slot counts as pinned, so nothing is evicted.
    const ProbeResult p = ProbeForInsert(keys, last, freq, shape.geometry, ScorePolicy::kLru,
                                         INT64_MIN, key);
    if (p.outcome != ProbeOutcome::kFound && p.outcome != ProbeOutcome::kFree) {
      status[kImRefused]++;
      continue;
    }
    status[p.outcome == ProbeOutcome::kFound ? kImOverwritten : kImInserted]++;
    const int64_t s = p.slot;
    keys[s] = key;
    last[s] = in_last[i];
    freq[s] = in_freq[i];
    std::copy_n(in_values + i * dim, dim, values + s * dim);
    std::copy_n(in_opt + i * width, width, opt + s * width);
    slots[i] = static_cast<int32_t>(s);
  }
}

ffi::Error ImportImpl(ffi::ThreadPool pool, ffi::BufferR1<ffi::S64> keys,
                      ffi::AnyBuffer values, ffi::BufferR2<ffi::F32> opt,
                      ffi::BufferR1<ffi::S64> last, ffi::BufferR1<ffi::S64> freq,
                      ffi::BufferR1<ffi::S64> counters, ffi::BufferR1<ffi::S64> in_keys,
                      ffi::AnyBuffer in_values, ffi::BufferR2<ffi::F32> in_opt,
                      ffi::BufferR1<ffi::S64> in_last, ffi::BufferR1<ffi::S64> in_freq,
                      ffi::ResultBufferR1<ffi::S64> keys_out,
                      ffi::Result<ffi::AnyBuffer> values_out,
                      ffi::ResultBufferR2<ffi::F32> opt_out,
                      ffi::ResultBufferR1<ffi::S64> last_out,
                      ffi::ResultBufferR1<ffi::S64> freq_out,
                      ffi::ResultBufferR1<ffi::S64> counters_out,
                      ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::S64> status,
                      int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_import_rows";
  auto shape_or = CheckTable(kOp, bucket_size, keys, values, opt, last, freq, counters);
  if (shape_or.has_error()) return shape_or.error();
  const TableShape shape = shape_or.value();
  if (auto err = CheckImport(shape, values, in_keys, in_values, in_opt, in_last, in_freq, slots,
                             status);
      err.failure()) {
    return err;
  }
  const int64_t n = in_keys.dimensions()[0];
  const int64_t C = shape.geometry.capacity;
  AliasOutputs(keys_out, keys, values_out, values, opt_out, opt, last_out, last,
               freq_out, freq, counters_out, counters);
  int64_t* st = status->typed_data();
  std::fill(st, st + status->dimensions()[0], 0);

  // Same bucket-range split as find_or_insert: deterministic for any task count.
  const int64_t* ik = in_keys.typed_data();
  const int64_t tasks = NumTasks(pool, n, 1 << 14);
  std::vector<int64_t> order;
  std::vector<int64_t> offsets(tasks + 1, 0);
  if (tasks > 1) {
    const uint64_t nb = shape.geometry.num_buckets;
    std::vector<int32_t> part(n);
    for (int64_t i = 0; i < n; ++i) {
      part[i] = static_cast<int32_t>(shape.geometry.BucketOfKey(ik[i]) * tasks / nb);
      offsets[part[i] + 1]++;
    }
    for (int64_t t = 0; t < tasks; ++t) offsets[t + 1] += offsets[t];
    order.resize(n);
    std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[cursor[part[i]]++] = i;
  } else {
    offsets[1] = n;
  }
  std::vector<std::array<int64_t, kNumImportStatus>> task_status(tasks);
  ffi::Error err = DispatchValueType(values.element_type(), kOp, [&](auto tag) {
    using T = decltype(tag);
    ParallelFor(pool, tasks, [&](int64_t t) {
      task_status[t].fill(0);
      ImportRange<T>(shape, order.empty() ? nullptr : order.data(), offsets[t],
                     offsets[t + 1], ik, reinterpret_cast<const T*>(in_values.untyped_data()),
                     in_opt.typed_data(), in_last.typed_data(), in_freq.typed_data(),
                     keys_out->typed_data(), reinterpret_cast<T*>(values_out->untyped_data()),
                     opt_out->typed_data(), last_out->typed_data(), freq_out->typed_data(),
                     slots->typed_data(), task_status[t].data());
    });
    return ffi::Error::Success();
  });
  for (const auto& ts : task_status) {
    for (int i = 0; i < kNumImportStatus; ++i) st[i] += ts[i];
  }
  counters_out->typed_data()[kSize] += st[kImInserted];
  return err;
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaImportRowsCpu, hypereca::cpu::ImportImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values     (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters   (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row keys   (n,) sentinels skipped
        .Arg<xla::ffi::AnyBuffer>()                 // row values (n, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // row state  (n, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row last_step (n,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row freq   (n,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       aliased
        .Ret<xla::ffi::AnyBuffer>()                 // values     aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters   aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // slots      (n,) -1: sentinel or refused
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // status     (4,) rows, inserted, overwritten, refused
        .Attr<int64_t>("bucket_size"));             // slots per bucket
// clang-format on
