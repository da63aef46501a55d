// find_or_insert on CUDA: the same results as ffi/src/find_or_insert_cpu.cc,
// bit for bit (slots, found, table contents, evicted rows and their order,
// status and counters).
//
// Queries of one bucket must be applied in query order; buckets are
// independent. Passes, all on the caller's stream:
//   1. prep      per query: slot -1 / found false, counts of queries and
//                reserved ids.
//   2. dedup     cub's stable radix sort of (key, query index): the first
//                occurrence of each key heads its segment. Only first
//                occurrences are probed: a repeat of a key is decided by its
//                first occurrence (after a hit or an insert the key is pinned
//                at `step`, so every repeat hits the same slot; after a refusal
//                the bucket stays without room, so every repeat is refused),
//                and a repeat's only other effect, freq += 1 on a pinned row,
//                never changes a victim choice. This keeps a hot id (a few
//                percent of a Zipf batch) from serializing its bucket.
//   3a. touch    every first occurrence already resident is accessed (and so
//                pinned) before any insert, as the CPU's first pass.
//   3. sort      stable radix sort of (bucket, query index) over the first
//                occurrences still missing (repeats, touched, reserved and
//                padding ids get the sentinel bucket num_buckets): each
//                bucket's misses become one run, still in query order.
//   4. probe     one warp per run applies its queries one after the other
//                (find_or_insert_probe_kernels.cu): the 32 lanes read 32
//                consecutive slots of the probe window per round and ballot
//                for the key / an empty slot / a tombstone; a full bucket's
//                victim is a warp arg-min in the exact BetterVictim order.
//                Only keys, last_step and freq are written here; each
//                eviction records the victim's key and scores per query.
//   5. repeats   each repeat copies its first occurrence's slot and found,
//                adds to hits or failed like the CPU's per-occurrence probe,
//                and the row's freq grows by the number of repeats.
//   6. scan      exclusive sum of the per-query eviction flags: the position
//                of each evicted row in the outputs, in query order.
//   7. finalize  one warp per inserting query: copies the victim's values and
//                optimizer state (untouched so far: values are only written in
//                this pass, and a slot is victimized at most once per call
//                because the new row is pinned at `step`) into the eviction
//                outputs, then writes the new row's initial values and state.
//   8. fill      eviction outputs past the count: key kEmptyKey, last_step and
//                freq 0; values and state stay unwritten there (as on CPU).
//   9. counters  the table's cumulative counters from the status vector.
// When the eviction outputs are smaller than the batch (E < n) the CPU op
// refuses the (E+1)-th eviction in query order; to reproduce that exactly the
// probe pass runs as ONE warp over all first occurrences in query order (no
// bucket sort). That path is exact but serial: callers keep E >= n (the
// default) for speed.
//
// "found" means resident before this call. A first occurrence that hits has
// found a row resident before the call (a slot filled earlier in this call
// holds a key that occurred earlier, so the query would be a repeat); a repeat
// reports what its first occurrence reported.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "cuda_kernels.h"
#include "cuda_util.cuh"
#include "find_or_insert.cuh"
#include "hypereca/common.h"
#include "hypereca/hash.h"
#include "hypereca/init.h"
#include "hypereca/probe.h"

namespace hypereca::cuda {
namespace {

// ---------------------------------------------------------------- scratch
struct ScratchLayout {
  size_t outcome = 0;      // uint8 (n,)
  size_t repeat_of = 0;    // int32 (n,) first occurrence of the key, -1 if none earlier
  size_t ev_flag = 0;      // int32 (n,)
  size_t ev_pos = 0;       // int32 (n,)
  size_t vkey = 0;         // int64 (n,)
  size_t vlast = 0;        // int64 (n,)
  size_t vfreq = 0;        // int64 (n,)
  size_t qidx_in = 0;      // int32 (n,) 0..n-1
  size_t sorted_key = 0;   // int64 (n,) keys sorted (dedup)
  size_t sorted_kq = 0;    // int32 (n,) their query indices
  size_t head_pos = 0;     // int32 (n,) i at a segment head, else 0
  size_t seg_head = 0;     // int32 (n,) head of the segment of sorted position i
  size_t bucket_in = 0;    // uint32 (n,)  parallel path only
  size_t bucket_out = 0;   // uint32 (n,)
  size_t qidx_out = 0;     // int32 (n,)
  size_t cub_temp = 0;
  size_t cub_temp_bytes = 0;
  size_t total = 0;
};

bool Sequential(const FindOrInsertArgs& a) { return a.ev_capacity < a.n; }

LaunchStatus Layout(const FindOrInsertArgs& a, ScratchLayout* l) {
  *l = ScratchLayout{};
  if (a.n == 0) return {};
  const size_t n = static_cast<size_t>(a.n);
  const int num_items = static_cast<int>(a.n);
  size_t cursor = 0;
  l->outcome = Take(&cursor, n);
  l->repeat_of = Take(&cursor, n * 4);
  l->ev_flag = Take(&cursor, n * 4);
  l->ev_pos = Take(&cursor, n * 4);
  l->vkey = Take(&cursor, n * 8);
  l->vlast = Take(&cursor, n * 8);
  l->vfreq = Take(&cursor, n * 8);
  l->qidx_in = Take(&cursor, n * 4);
  l->sorted_key = Take(&cursor, n * 8);
  l->sorted_kq = Take(&cursor, n * 4);
  l->head_pos = Take(&cursor, n * 4);
  l->seg_head = Take(&cursor, n * 4);
  size_t temp = 0, bytes = 0;
  HYPERECA_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, bytes,
                                                  static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), num_items),
                    "sizing the eviction scan");
  temp = bytes > temp ? bytes : temp;
  bytes = 0;
  HYPERECA_CUDA_TRY(cub::DeviceScan::InclusiveScan(nullptr, bytes,
                                                   static_cast<const int32_t*>(nullptr),
                                                   static_cast<int32_t*>(nullptr), MaxOp{},
                                                   num_items),
                    "sizing the segment scan");
  temp = bytes > temp ? bytes : temp;
  bytes = 0;
  HYPERECA_CUDA_TRY(cub::DeviceRadixSort::SortPairs(
                        nullptr, bytes, static_cast<const int64_t*>(nullptr),
                        static_cast<int64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                        static_cast<int32_t*>(nullptr), num_items),
                    "sizing the key sort");
  temp = bytes > temp ? bytes : temp;
  if (!Sequential(a)) {
    l->bucket_in = Take(&cursor, n * 4);
    l->bucket_out = Take(&cursor, n * 4);
    l->qidx_out = Take(&cursor, n * 4);
    bytes = 0;
    HYPERECA_CUDA_TRY(
        cub::DeviceRadixSort::SortPairs(
            nullptr, bytes, static_cast<const uint32_t*>(nullptr),
            static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
            static_cast<int32_t*>(nullptr), num_items, 0, SortBits(a.num_buckets)),
        "sizing the bucket sort");
    temp = bytes > temp ? bytes : temp;
  }
  l->cub_temp_bytes = temp < 1 ? 1 : temp;
  l->cub_temp = Take(&cursor, l->cub_temp_bytes);
  l->total = cursor;
  return {};
}

// ---------------------------------------------------------------- 1. prep
__global__ void PrepKernel(const int64_t* __restrict__ query, int64_t n,
                           int32_t* __restrict__ slots, bool* __restrict__ found,
                           uint8_t* __restrict__ outcome, int32_t* __restrict__ repeat_of,
                           int32_t* __restrict__ ev_flag, int32_t* __restrict__ qidx_in,
                           unsigned long long* __restrict__ status) {
  // No early return: every lane reaches the ballots.
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = q < n;
  const int64_t key = valid ? query[q] : kEmptyKey;
  if (valid) {
    slots[q] = -1;
    found[q] = false;
    outcome[q] = kOutNone;
    repeat_of[q] = -1;
    ev_flag[q] = 0;
    qidx_in[q] = static_cast<int32_t>(q);
  }
  const unsigned counted = __ballot_sync(kFullMask, valid && key != kPaddingKey);
  const unsigned reserved = __ballot_sync(kFullMask, valid && key == kErasedKey);
  if (threadIdx.x % kWarp == 0) {
    if (counted) atomicAdd(status + kStQueries, static_cast<unsigned long long>(__popc(counted)));
    if (reserved) {
      atomicAdd(status + kStReserved, static_cast<unsigned long long>(__popc(reserved)));
    }
  }
}

// ---------------------------------------------------------------- 2. dedup
// After the max-scan seg_head[i] is the head of i's segment: the key's first
// occurrence in query order (the sort is stable). Marks repeats and gives
// every query its bucket (sentinel for repeats, reserved and padding ids).
__global__ void MarkRepeatsKernel(const int64_t* __restrict__ sorted_key,
                                  const int32_t* __restrict__ sorted_kq,
                                  const int32_t* __restrict__ seg_head, int64_t n,
                                  uint64_t num_buckets, int32_t* __restrict__ repeat_of,
                                  uint32_t* __restrict__ bucket_in) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t key = sorted_key[i];
  const int32_t q = sorted_kq[i];
  const int32_t h = seg_head[i];
  const bool reserved = IsReserved(key);
  const bool repeat = !reserved && h != static_cast<int32_t>(i);
  if (repeat) repeat_of[q] = sorted_kq[h];
  if (bucket_in != nullptr) {
    bucket_in[q] = (reserved || repeat)
                       ? static_cast<uint32_t>(num_buckets)
                       : static_cast<uint32_t>(BucketOf(BucketHash(key), num_buckets));
  }
}
// ---------------------------------------------------------------- 3a. touch
// As the CPU's first pass: every first occurrence already resident is
// accessed now (last_step = step pins it) before any insert, so no key of the
// call can be a victim of the call. Touched queries leave the bucket sort.
// The keys are distinct here, so no two threads write the same slot.
__global__ void TouchKernel(const int64_t* __restrict__ query, int64_t n,
                            const int32_t* __restrict__ repeat_of, TableGeometry g,
                            const int64_t* __restrict__ keys, int64_t* __restrict__ last,
                            int64_t* __restrict__ freq, const int64_t* __restrict__ step,
                            int32_t* __restrict__ slots, bool* __restrict__ found,
                            uint32_t* __restrict__ bucket_in,
                            unsigned long long* __restrict__ status) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= n) return;
  const int64_t key = query[q];
  if (IsReserved(key) || repeat_of[q] >= 0) return;
  const int64_t s = FindSlot(keys, g, key);
  if (s < 0) return;
  last[s] = *step;
  freq[s] += 1;
  slots[q] = static_cast<int32_t>(s);
  found[q] = true;
  if (bucket_in != nullptr) bucket_in[q] = static_cast<uint32_t>(g.num_buckets);
  atomicAdd(status + kStHits, 1ull);
}

// ---------------------------------------------------------------- 4. probe
// In find_or_insert_probe_kernels.cu (ProbeParams: find_or_insert.cuh).

// ---------------------------------------------------------------- 5. repeats
// Over the key-sorted positions, so the repeats of one key sit side by side:
// one atomic per group of equal slots in a warp adds the repeats to freq.
// A repeat reads its first occurrence's slot and found (never written here).
__global__ void ResolveRepeatsKernel(const int32_t* __restrict__ sorted_kq, int64_t n,
                                     const int32_t* __restrict__ repeat_of, int32_t* slots,
                                     bool* found, int64_t* __restrict__ freq,
                                     unsigned long long* __restrict__ status) {
  // No early return: every lane reaches the ballots and the match.
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const unsigned lane = threadIdx.x % kWarp;
  int32_t first = -1;
  int32_t q = -1;
  if (i < n) {
    q = sorted_kq[i];
    first = repeat_of[q];
  }
  const bool repeat = first >= 0;
  int32_t slot = -1;
  bool was_found = false;
  if (repeat) {
    slot = slots[first];
    was_found = found[first];
    slots[q] = slot;
    found[q] = was_found;
  }
  // As the CPU's probe of each occurrence: a hit on a row resident before the
  // call counts as a hit, a refused key is refused again.
  const unsigned hit_bits = __ballot_sync(kFullMask, repeat && was_found);
  const unsigned failed_bits = __ballot_sync(kFullMask, repeat && slot < 0);
  const long long group = (repeat && slot >= 0) ? static_cast<long long>(slot) : -1ll;
  const unsigned peers = __match_any_sync(kFullMask, group);
  if (group >= 0 && static_cast<int>(lane) == __ffs(static_cast<int>(peers)) - 1) {
    atomicAdd(reinterpret_cast<unsigned long long*>(freq + slot),
              static_cast<unsigned long long>(__popc(peers)));
  }
  if (lane == 0) {
    if (hit_bits) atomicAdd(status + kStHits, static_cast<unsigned long long>(__popc(hit_bits)));
    if (failed_bits) {
      atomicAdd(status + kStFailed, static_cast<unsigned long long>(__popc(failed_bits)));
    }
  }
}

// ---------------------------------------------------------------- 6. scan (in Run)
// ---------------------------------------------------------------- 7. finalize
template <typename T>
__global__ void FinalizeKernel(const int64_t* __restrict__ query, int64_t n,
                               const uint8_t* __restrict__ outcome,
                               const int32_t* __restrict__ slots,
                               const int32_t* __restrict__ ev_pos,
                               const int64_t* __restrict__ vkey,
                               const int64_t* __restrict__ vlast,
                               const int64_t* __restrict__ vfreq, T* values, float* opt,
                               int64_t dim, int64_t width, const float* __restrict__ opt_init,
                               uint64_t seed, InitKind init_kind, float init_scale,
                               int64_t* __restrict__ ev_keys, T* __restrict__ ev_values,
                               float* __restrict__ ev_opt, int64_t* __restrict__ ev_last,
                               int64_t* __restrict__ ev_freq) {
  const int64_t q = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t lane = threadIdx.x % kWarp;
  if (q >= n) return;
  const uint8_t o = outcome[q];
  if (o == kOutNone) return;
  const int64_t s = slots[q];
  if (o == kOutVictim) {
    const int64_t pos = ev_pos[q];
    if (lane == 0) {
      ev_keys[pos] = vkey[q];
      ev_last[pos] = vlast[q];
      ev_freq[pos] = vfreq[q];
    }
    // Each lane reads a column before it overwrites that same column below.
    for (int64_t c = lane; c < dim; c += kWarp) ev_values[pos * dim + c] = values[s * dim + c];
    for (int64_t c = lane; c < width; c += kWarp) ev_opt[pos * width + c] = opt[s * width + c];
  }
  const uint64_t row_seed = RowSeed(seed, query[q]);
  for (int64_t c = lane; c < dim; c += kWarp) {
    values[s * dim + c] =
        FromF32<T>(InitValue(row_seed, static_cast<uint32_t>(c), init_kind, init_scale));
  }
  for (int64_t c = lane; c < width; c += kWarp) opt[s * width + c] = opt_init[c];
}

// ---------------------------------------------------------------- 8. fill
// Past the count: key kEmptyKey, last_step and freq 0. Values and state are
// unspecified there (the CPU op leaves them unwritten too).
__global__ void FillEvictionsKernel(const int64_t* __restrict__ status, int64_t capacity,
                                    int64_t* __restrict__ ev_keys,
                                    int64_t* __restrict__ ev_last,
                                    int64_t* __restrict__ ev_freq) {
  const int64_t count = status[kStEvicted];
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = count + tid; i < capacity; i += stride) {
    ev_keys[i] = kEmptyKey;
    ev_last[i] = 0;
    ev_freq[i] = 0;
  }
}

// ---------------------------------------------------------------- 9. counters
__global__ void CountersKernel(const int64_t* __restrict__ st, int64_t* __restrict__ counters) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  counters[kSize] += st[kStInserted] - st[kStEvicted];
  counters[kInserted] += st[kStInserted];
  counters[kEvicted] += st[kStEvicted];
  counters[kReservedRejected] += st[kStReserved];
  counters[kInsertFailed] += st[kStFailed];
  counters[kLookups] += st[kStQueries];
  counters[kHits] += st[kStHits];
}


template <typename T>
LaunchStatus Run(const FindOrInsertArgs& a, const ScratchLayout& l, char* scratch,
                 cudaStream_t stream) {
  T* values = static_cast<T*>(a.values);
  T* ev_values = static_cast<T*>(a.ev_values);
  auto* status = reinterpret_cast<unsigned long long*>(a.status);
  HYPERECA_CUDA_TRY(cudaMemsetAsync(a.status, 0, static_cast<size_t>(a.status_len) * 8, stream),
                    "clearing the status");
  if (a.n > 0) {
    const int64_t n = a.n;
    const int num_items = static_cast<int>(n);
    const unsigned blocks = static_cast<unsigned>(CeilDiv(n, kThreads));
    const unsigned warp_blocks = static_cast<unsigned>(CeilDiv(n, kWarpsPerBlock));
    auto* outcome = reinterpret_cast<uint8_t*>(scratch + l.outcome);
    auto* repeat_of = reinterpret_cast<int32_t*>(scratch + l.repeat_of);
    auto* ev_flag = reinterpret_cast<int32_t*>(scratch + l.ev_flag);
    auto* ev_pos = reinterpret_cast<int32_t*>(scratch + l.ev_pos);
    auto* vkey = reinterpret_cast<int64_t*>(scratch + l.vkey);
    auto* vlast = reinterpret_cast<int64_t*>(scratch + l.vlast);
    auto* vfreq = reinterpret_cast<int64_t*>(scratch + l.vfreq);
    auto* qidx_in = reinterpret_cast<int32_t*>(scratch + l.qidx_in);
    auto* sorted_key = reinterpret_cast<int64_t*>(scratch + l.sorted_key);
    auto* sorted_kq = reinterpret_cast<int32_t*>(scratch + l.sorted_kq);
    auto* head_pos = reinterpret_cast<int32_t*>(scratch + l.head_pos);
    auto* seg_head = reinterpret_cast<int32_t*>(scratch + l.seg_head);
    void* cub_temp = scratch + l.cub_temp;
    const bool sequential = Sequential(a);
    uint32_t* bucket_in = sequential ? nullptr : reinterpret_cast<uint32_t*>(scratch + l.bucket_in);
    uint32_t* bucket_out =
        sequential ? nullptr : reinterpret_cast<uint32_t*>(scratch + l.bucket_out);
    int32_t* qidx_out = sequential ? nullptr : reinterpret_cast<int32_t*>(scratch + l.qidx_out);

    // 1. prep
    PrepKernel<<<blocks, kThreads, 0, stream>>>(a.query, n, a.slots, a.found, outcome,
                                                repeat_of, ev_flag, qidx_in, status);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert prep kernel");
    // 2. dedup
    size_t temp_bytes = l.cub_temp_bytes;
    HYPERECA_CUDA_TRY(cub::DeviceRadixSort::SortPairs(cub_temp, temp_bytes, a.query, sorted_key,
                                                      qidx_in, sorted_kq, num_items, 0, 64,
                                                      stream),
                      "sorting the queries by key");
    SegmentHeadsKernel<int64_t><<<blocks, kThreads, 0, stream>>>(sorted_key, n, head_pos);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert segment kernel");
    temp_bytes = l.cub_temp_bytes;
    HYPERECA_CUDA_TRY(cub::DeviceScan::InclusiveScan(cub_temp, temp_bytes, head_pos, seg_head,
                                                     MaxOp{}, num_items, stream),
                      "scanning the key segments");
    MarkRepeatsKernel<<<blocks, kThreads, 0, stream>>>(sorted_key, sorted_kq, seg_head, n,
                                                       a.num_buckets, repeat_of, bucket_in);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert repeat kernel");
    // 3a. touch the resident keys first
    TableGeometry geometry;
    geometry.capacity = a.capacity;
    geometry.bucket_size = a.bucket_size;
    geometry.num_buckets = a.num_buckets;
    TouchKernel<<<blocks, kThreads, 0, stream>>>(a.query, n, repeat_of, geometry, a.keys,
                                                 a.last_step, a.freq, a.step, a.slots,
                                                 a.found, bucket_in, status);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert touch kernel");

    ProbeParams p;
    p.keys = a.keys;
    p.last = a.last_step;
    p.freq = a.freq;
    p.bucket_size = a.bucket_size;
    p.num_buckets = a.num_buckets;
    p.policy = static_cast<ScorePolicy>(a.policy);
    p.query = a.query;
    p.repeat_of = repeat_of;
    p.n = n;
    p.step = a.step;
    p.pin_from = a.pin_from;
    p.max_evictions = sequential ? a.ev_capacity : std::numeric_limits<int64_t>::max();
    p.slots = a.slots;
    p.found = a.found;
    p.outcome = outcome;
    p.ev_flag = ev_flag;
    p.vkey = vkey;
    p.vlast = vlast;
    p.vfreq = vfreq;
    p.status = status;
    if (sequential) {
      // 4. probe, one warp in query order
      const LaunchStatus probed = LaunchProbeSequential(p, stream);
      if (!probed.ok()) return probed;
    } else {
      // 3. sort by bucket, 4. probe one run per warp
      temp_bytes = l.cub_temp_bytes;
      HYPERECA_CUDA_TRY(cub::DeviceRadixSort::SortPairs(
                            cub_temp, temp_bytes, bucket_in, bucket_out, qidx_in, qidx_out,
                            num_items, 0, SortBits(a.num_buckets), stream),
                        "sorting the queries by bucket");
      const LaunchStatus probed = LaunchProbeRuns(p, bucket_out, qidx_out, stream);
      if (!probed.ok()) return probed;
    }
    // 5. repeats
    ResolveRepeatsKernel<<<blocks, kThreads, 0, stream>>>(sorted_kq, n, repeat_of, a.slots,
                                                          a.found, a.freq, status);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert repeats kernel");
    // 6. eviction positions
    temp_bytes = l.cub_temp_bytes;
    HYPERECA_CUDA_TRY(cub::DeviceScan::ExclusiveSum(cub_temp, temp_bytes, ev_flag, ev_pos,
                                                    num_items, stream),
                      "scanning the eviction flags");
    // 7. finalize
    FinalizeKernel<T><<<warp_blocks, kThreads, 0, stream>>>(
        a.query, n, outcome, a.slots, ev_pos, vkey, vlast, vfreq, values, a.opt, a.dim,
        a.width, a.opt_init, a.seed, static_cast<InitKind>(a.init_kind), a.init_scale,
        a.ev_keys, ev_values, a.ev_opt, a.ev_last, a.ev_freq);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert finalize kernel");
  }
  // 8. fill
  if (a.ev_capacity > 0) {
    FillEvictionsKernel<<<GridFor(a.ev_capacity, kThreads), kThreads, 0, stream>>>(
        a.status, a.ev_capacity, a.ev_keys, a.ev_last, a.ev_freq);
    HYPERECA_CUDA_LAUNCHED("launching the find_or_insert eviction fill kernel");
  }
  // 9. counters
  CountersKernel<<<1, 1, 0, stream>>>(a.status, a.counters);
  HYPERECA_CUDA_LAUNCHED("launching the find_or_insert counters kernel");
  return {};
}

}  // namespace

LaunchStatus FindOrInsertScratchBytes(const FindOrInsertArgs& a, size_t* bytes) {
  ScratchLayout l;
  const LaunchStatus s = Layout(a, &l);
  *bytes = l.total;
  return s;
}

LaunchStatus FindOrInsert(const FindOrInsertArgs& a, void* scratch, size_t scratch_bytes,
                          cudaStream_t stream) {
  ScratchLayout l;
  const LaunchStatus s = Layout(a, &l);
  if (!s.ok()) return s;
  const LaunchStatus checked = CheckScratch(scratch, scratch_bytes, l.total);
  if (!checked.ok()) return checked;
  char* base = static_cast<char*>(scratch);
  if (a.value_type == ValueType::kF32) return Run<float>(a, l, base, stream);
  return Run<Bf16>(a, l, base, stream);
}

}  // namespace hypereca::cuda
