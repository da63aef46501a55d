// find_or_insert on CPU: slot of every query key, inserting (and initializing)
// the missing ones and evicting by score from full buckets.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/init.h"
#include "hypereca/probe.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

// A row evicted by one task, waiting to be written to the eviction outputs in
// query order.
struct Eviction {
  int64_t query;     // index of the query whose insert evicted the row
  int64_t key;
  int64_t last_step;
  int64_t freq;
  int64_t row;       // index into the task's row buffers
};

template <typename T>
struct TaskState {
  int64_t status[kNumInsertStatus] = {};
  std::vector<Eviction> evictions;
  std::vector<T> rows;       // evicted values, dim per eviction
  std::vector<float> state;  // evicted optimizer state, width per eviction
};

struct Options {
  uint64_t seed;
  InitKind init_kind;
  float init_scale;
  ScorePolicy policy;
  int64_t step;
  int64_t pin_from;
  int64_t max_evictions;  // per task; only binding with a single task
};

// Applies the queries of one task's buckets in two passes. First every key
// already resident is touched (accessed at `step`, so pinned: no key of this
// call can be evicted by it, whatever its position in the call); then the
// misses are inserted in query order. A key inserted earlier in the second
// pass is found again by its repeats, which report found = false (it was not
// resident before the call).
template <typename T>
void ProcessQueries(const TableShape& shape, const Options& o, const int64_t* query,
                    const int64_t* order, int64_t begin, int64_t end,
                    const float* opt_init, int64_t* keys, T* values, float* opt,
                    int64_t* last, int64_t* freq, int32_t* slots, bool* found,
                    TaskState<T>& ts) {
  const int64_t dim = shape.dim, width = shape.state_width;
  constexpr int64_t kAhead = 8;
  auto at = [&](int64_t j) { return order ? order[j] : j; };
  for (int64_t j = begin; j < end; ++j) {
    if (j + kAhead < end) PrefetchProbe(keys, shape.geometry, query[at(j + kAhead)]);
    const int64_t q = at(j);
    const int64_t key = query[q];
    slots[q] = -1;
    found[q] = false;
    if (key == kPaddingKey) continue;
    ts.status[kStQueries]++;
    if (key == kErasedKey) {
      ts.status[kStReserved]++;
      continue;
    }
    const int64_t s = FindSlot(keys, shape.geometry, key);
    if (s < 0) continue;
    ts.status[kStHits]++;
    found[q] = true;
    slots[q] = static_cast<int32_t>(s);
    last[s] = o.step;
    freq[s] += 1;
  }
  for (int64_t j = begin; j < end; ++j) {
    const int64_t q = at(j);
    const int64_t key = query[q];
    if (found[q] || IsReserved(key)) continue;
    ProbeResult p = ProbeForInsert(keys, last, freq, shape.geometry, o.policy,
                                   o.pin_from, key);
    if (p.outcome == ProbeOutcome::kFound) {  // inserted by an earlier query of this call
      slots[q] = static_cast<int32_t>(p.slot);
      last[p.slot] = o.step;
      freq[p.slot] += 1;
      continue;
    }
    if (p.outcome == ProbeOutcome::kVictim &&
        static_cast<int64_t>(ts.evictions.size()) >= o.max_evictions) {
      p.outcome = ProbeOutcome::kNoRoom;
    }
    if (p.outcome == ProbeOutcome::kNoRoom) {
      ts.status[kStFailed]++;
      continue;
    }
    const int64_t s = p.slot;
    if (p.outcome == ProbeOutcome::kVictim) {
      const int64_t row = static_cast<int64_t>(ts.evictions.size());
      ts.evictions.push_back({q, keys[s], last[s], freq[s], row});
      ts.rows.insert(ts.rows.end(), values + s * dim, values + (s + 1) * dim);
      ts.state.insert(ts.state.end(), opt + s * width, opt + (s + 1) * width);
      ts.status[kStEvicted]++;
    }
    keys[s] = key;
    last[s] = o.step;
    freq[s] = 1;
    const uint64_t row_seed = RowSeed(o.seed, key);
    for (int64_t c = 0; c < dim; ++c) {
      values[s * dim + c] = FromF32<T>(
          InitValue(row_seed, static_cast<uint32_t>(c), o.init_kind, o.init_scale));
    }
    for (int64_t c = 0; c < width; ++c) opt[s * width + c] = opt_init[c];
    ts.status[kStInserted]++;
    slots[q] = static_cast<int32_t>(s);
  }
}

template <typename T>
ffi::Error Run(ffi::ThreadPool& pool, const TableShape& shape, Options o,
               ffi::BufferR1<ffi::S64> query, ffi::BufferR1<ffi::F32> opt_init,
               int64_t* keys, T* values, float* opt, int64_t* last, int64_t* freq,
               int64_t* counters, int32_t* slots, bool* found, int64_t* ev_keys,
               T* ev_values, float* ev_opt, int64_t* ev_last, int64_t* ev_freq,
               int64_t ev_capacity, int64_t* status) {
  const int64_t n = query.dimensions()[0];
  const int64_t* q = query.typed_data();
  const int64_t dim = shape.dim, width = shape.state_width;
  // Buckets are split into task ranges; each task applies its buckets' queries
  // in query order, so the table ends up the same for any number of tasks. With
  // fewer eviction outputs than queries one task keeps the cap deterministic.
  const int64_t tasks = ev_capacity >= n ? NumTasks(pool, n, 1 << 14) : 1;
  o.max_evictions = tasks == 1 ? ev_capacity : n;
  std::vector<int64_t> order;
  std::vector<int64_t> offsets(tasks + 1, 0);
  if (tasks > 1) {
    const uint64_t nb = shape.geometry.num_buckets;
    std::vector<int32_t> part(n);
    ParallelFor(pool, tasks, [&](int64_t t) {
      int64_t b, e;
      TaskRange(n, tasks, t, &b, &e);
      for (int64_t i = b; i < e; ++i) {
        part[i] = static_cast<int32_t>(shape.geometry.BucketOfKey(q[i]) * tasks / nb);
      }
    });
    for (int64_t i = 0; i < n; ++i) offsets[part[i] + 1]++;
    for (int64_t t = 0; t < tasks; ++t) offsets[t + 1] += offsets[t];
    order.resize(n);
    std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[cursor[part[i]]++] = i;
  } else {
    offsets[1] = n;
  }
  std::vector<TaskState<T>> states(tasks);
  ParallelFor(pool, tasks, [&](int64_t t) {
    ProcessQueries<T>(shape, o, q, order.empty() ? nullptr : order.data(), offsets[t],
                      offsets[t + 1], opt_init.typed_data(), keys, values, opt, last,
                      freq, slots, found, states[t]);
  });
  // Evictions in query order, whatever the task split.
  std::vector<std::pair<int64_t, int64_t>> merged;  // (query, task)
  for (int64_t t = 0; t < tasks; ++t) {
    for (int64_t i = 0; i < kNumInsertStatus; ++i) status[i] += states[t].status[i];
    for (const Eviction& e : states[t].evictions) merged.push_back({e.query, t});
  }
  std::sort(merged.begin(), merged.end());
  std::vector<int64_t> next_in_task(tasks, 0);
  int64_t out = 0;
  for (const auto& [query_index, t] : merged) {
    const Eviction& e = states[t].evictions[next_in_task[t]++];
    ev_keys[out] = e.key;
    ev_last[out] = e.last_step;
    ev_freq[out] = e.freq;
    std::copy_n(states[t].rows.data() + e.row * dim, dim, ev_values + out * dim);
    std::copy_n(states[t].state.data() + e.row * width, width, ev_opt + out * width);
    ++out;
  }
  for (int64_t i = out; i < ev_capacity; ++i) {
    ev_keys[i] = kEmptyKey;
    ev_last[i] = 0;
    ev_freq[i] = 0;
  }
  // Values and state past the count are left unwritten: the keys say where the
  // evictions end, and zeroing (E, dim) rows every call would cost more than the
  // lookup itself.

  counters[kSize] += status[kStInserted] - status[kStEvicted];
  counters[kInserted] += status[kStInserted];
  counters[kEvicted] += status[kStEvicted];
  counters[kReservedRejected] += status[kStReserved];
  counters[kInsertFailed] += status[kStFailed];
  counters[kLookups] += status[kStQueries];
  counters[kHits] += status[kStHits];
  return ffi::Error::Success();
}

ffi::Error FindOrInsertImpl(
    ffi::ThreadPool pool, ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
    ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
    ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
    ffi::BufferR1<ffi::S64> query, ffi::BufferR0<ffi::S64> step,
    ffi::BufferR0<ffi::S64> pin_from, ffi::BufferR1<ffi::F32> opt_init,
    ffi::ResultBufferR1<ffi::S64> keys_out, ffi::Result<ffi::AnyBuffer> values_out,
    ffi::ResultBufferR2<ffi::F32> opt_out, ffi::ResultBufferR1<ffi::S64> last_out,
    ffi::ResultBufferR1<ffi::S64> freq_out, ffi::ResultBufferR1<ffi::S64> counters_out,
    ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::PRED> found,
    ffi::ResultBufferR1<ffi::S64> ev_keys, ffi::Result<ffi::AnyBuffer> ev_values,
    ffi::ResultBufferR2<ffi::F32> ev_opt, ffi::ResultBufferR1<ffi::S64> ev_last,
    ffi::ResultBufferR1<ffi::S64> ev_freq, ffi::ResultBufferR1<ffi::S64> status,
    int64_t seed, int32_t init_kind, float init_scale, int32_t policy,
    int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_find_or_insert";
  auto shape_or = CheckTable(kOp, bucket_size, keys, values, opt, last, freq, counters);
  if (shape_or.has_error()) return shape_or.error();
  const TableShape shape = shape_or.value();
  if (auto err = CheckFindOrInsert(shape, values, query, opt_init, values_out, slots, found,
                                   ev_keys, ev_values, ev_opt, ev_last, ev_freq, status,
                                   init_kind, policy);
      err.failure()) {
    return err;
  }
  const int64_t ev_capacity = ev_keys->dimensions()[0];
  const int64_t C = shape.geometry.capacity;
  AliasOutputs(keys_out, keys, values_out, values, opt_out, opt, last_out, last,
               freq_out, freq, counters_out, counters);
  int64_t* st = status->typed_data();
  std::fill(st, st + status->dimensions()[0], 0);

  Options o;
  o.seed = static_cast<uint64_t>(seed);
  o.init_kind = static_cast<InitKind>(init_kind);
  o.init_scale = init_scale;
  o.policy = static_cast<ScorePolicy>(policy);
  o.step = *step.typed_data();
  o.pin_from = std::min(*pin_from.typed_data(), o.step);
  o.max_evictions = ev_capacity;
  return DispatchValueType(values.element_type(), kOp, [&](auto tag) {
    using T = decltype(tag);
    return Run<T>(pool, shape, o, query, opt_init, keys_out->typed_data(),
                  reinterpret_cast<T*>(values_out->untyped_data()), opt_out->typed_data(),
                  last_out->typed_data(), freq_out->typed_data(),
                  counters_out->typed_data(), slots->typed_data(), found->typed_data(),
                  ev_keys->typed_data(), reinterpret_cast<T*>(ev_values->untyped_data()),
                  ev_opt->typed_data(), ev_last->typed_data(), ev_freq->typed_data(),
                  ev_capacity, st);
  });
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaFindOrInsertCpu, hypereca::cpu::FindOrInsertImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                  // values     (C, D) f32|bf16
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // freq       (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters   (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // query      (n,)
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()    // step       ()
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()    // pin_from   () rows accessed at >= it are not evicted
        .Arg<xla::ffi::BufferR1<xla::ffi::F32>>()    // opt_init   (K,) state of a new row
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // keys       aliased
        .Ret<xla::ffi::AnyBuffer>()                  // values     aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // last_step  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // freq       aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters   aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()    // slots      (n,) -1: padding, reserved, refused
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()   // found      (n,) resident before this call
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // evicted keys   (E,) kEmptyKey past the count
        .Ret<xla::ffi::AnyBuffer>()                  // evicted values (E, D) unspecified past the count
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // evicted state  (E, K) unspecified past the count
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // evicted last_step (E,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // evicted freq   (E,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // status (8,) see InsertStatus
        .Attr<int64_t>("seed")                       // table seed of the row initializer
        .Attr<int32_t>("init_kind")                  // InitKind
        .Attr<float>("init_scale")                   // initializer scale
        .Attr<int32_t>("policy")                     // ScorePolicy
        .Attr<int64_t>("bucket_size"));              // slots per bucket (power of two)
// clang-format on
