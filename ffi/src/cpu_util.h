// Helpers shared by the CPU handlers: parallel loops on XLA's FFI thread pool,
// dtype dispatch and small checks.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "hypereca/common.h"
#include "hypereca/dtype.h"
#include "hypereca/hash.h"
#include "hypereca/probe.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {

namespace ffi = xla::ffi;

// Runs fn(task) for task in [0, num_tasks) on the calling thread and on XLA's
// intra-op pool. The caller takes tasks too and only waits for tasks another
// thread has already started, so it never deadlocks when the pool is busy or
// is the thread running this handler. Pool work items that start after the
// loop is over find nothing left to do.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t num_tasks, Fn&& fn) {
  if (num_tasks <= 0) return;
  if (num_tasks == 1) {
    fn(int64_t{0});
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    int64_t total = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  state->total = num_tasks;
  // fn lives on this frame; helpers only touch it while holding a task, and
  // this frame outlives every started task (we wait for `done` below).
  auto* fn_ptr = &fn;
  auto run = [state, fn_ptr]() {
    for (;;) {
      const int64_t t = state->next.fetch_add(1);
      if (t >= state->total) return;
      (*fn_ptr)(t);
      if (state->done.fetch_add(1) + 1 == state->total) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  const int64_t helpers =
      std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 0), num_tasks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([run]() { run(); });
  run();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == state->total; });
}

// Number of tasks worth splitting `work` items into.
inline int64_t NumTasks(ffi::ThreadPool& pool, int64_t work, int64_t grain) {
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 0) + 1;
  return std::max<int64_t>(1, std::min<int64_t>(threads * 4, work / grain));
}

// Splits [0, n) into num_tasks nearly equal ranges.
inline void TaskRange(int64_t n, int64_t num_tasks, int64_t t, int64_t* begin,
                      int64_t* end) {
  *begin = n * t / num_tasks;
  *end = n * (t + 1) / num_tasks;
}

// Hints the cache lines of [p, p + bytes) (at most 4 lines) into cache.
inline void Prefetch(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t off = 0; off < bytes && off < 256; off += 64) __builtin_prefetch(c + off);
}

// Prefetches the first probed line of key's bucket.
inline void PrefetchProbe(const int64_t* keys, const TableGeometry& g, int64_t key) {
  const uint64_t h = BucketHash(key);
  __builtin_prefetch(keys + static_cast<int64_t>(BucketOf(h, g.num_buckets)) * g.bucket_size +
                     ProbeStart(h, g.bucket_size));
}

// Copies src into dst unless XLA already aliased them.
inline void CopyIfDistinct(void* dst, const void* src, size_t bytes) {
  if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
}

// AliasOutputs(out0, in0, out1, in1, ...): each aliased output starts as its
// input (a no-op when XLA already made them one buffer, as under donation).
template <typename Out, typename In, typename... Rest>
void AliasOutputs(Out& out, const In& in, Rest&... rest) {
  CopyIfDistinct(out->untyped_data(), in.untyped_data(), in.size_bytes());
  if constexpr (sizeof...(rest) > 0) AliasOutputs(rest...);
}

inline ffi::Error InvalidArgument(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, msg);
}

// Calls fn(T{}) with T the storage type of a values buffer.
template <typename Fn>
ffi::Error DispatchValueType(ffi::DataType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case ffi::DataType::F32: return fn(float{});
    case ffi::DataType::BF16: return fn(Bf16{});
    default:
      return InvalidArgument(std::string(op) +
                             ": table values must be float32 or bfloat16");
  }
}

}  // namespace hypereca::cpu
