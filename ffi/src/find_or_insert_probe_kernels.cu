// find_or_insert on CUDA, pass 4: the probe (see find_or_insert_kernels.cu
// for the whole op and find_or_insert.cuh for what the two files share). One
// warp applies the queries of one bucket, one after the other: the 32 lanes
// read 32 consecutive slots of the probe window per round and ballot for the
// key / an empty slot / a tombstone; a full bucket's victim is a warp arg-min
// in the exact BetterVictim order of ffi/include/hypereca/probe.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_util.cuh"
#include "find_or_insert.cuh"
#include "hypereca/common.h"
#include "hypereca/hash.h"
#include "hypereca/probe.h"

namespace hypereca::cuda {
namespace {

// Per-warp tallies (identical in every lane).
struct Tally {
  unsigned long long hits = 0, inserted = 0, evicted = 0, failed = 0;
  int64_t evictions = 0;  // of this warp, for the max_evictions cap
};

// Lexicographic victim order of probe.h's BetterVictim; slot < 0: no candidate.
__device__ __forceinline__ bool Better(ScorePolicy policy, int64_t a_slot, int64_t a_last,
                                       int64_t a_freq, int64_t b_slot, int64_t b_last,
                                       int64_t b_freq) {
  if (a_slot < 0) return false;
  if (b_slot < 0) return true;
  return BetterVictim(policy, a_last, a_freq, a_slot, b_last, b_freq, b_slot);
}

// Applies one query (key neither padding nor reserved) with the whole warp.
// Control flow is warp-uniform: every decision comes from a ballot or a
// butterfly reduction; only lane 0 writes, followed by __syncwarp() so the
// next query's loads see the writes.
__device__ void ProcessQuery(const ProbeParams& p, int64_t q, int64_t key, int64_t step,
                             int64_t pin, unsigned lane, Tally& t) {
  const uint32_t bucket_size = p.bucket_size;
  const int64_t base =
      static_cast<int64_t>(BucketOf(BucketHash(key), p.num_buckets)) * bucket_size;
  // Probe in the order of ProbeForInsert: stop at the key or at an empty slot;
  // the first tombstone before that is the insert target.
  const WarpProbeResult probe = WarpProbe(p.keys, bucket_size, p.num_buckets, key, lane);
  const int64_t hit = probe.hit, free_slot = probe.free_slot;

  if (hit >= 0) {
    // Resident before this call: only first occurrences are probed.
    if (lane == 0) {
      p.last[hit] = step;
      p.freq[hit] += 1;
      p.slots[q] = static_cast<int32_t>(hit);
      p.found[q] = true;
    }
    t.hits++;
    __syncwarp();
    return;
  }
  if (free_slot >= 0) {
    if (lane == 0) {
      p.keys[free_slot] = key;
      p.last[free_slot] = step;
      p.freq[free_slot] = 1;
      p.slots[q] = static_cast<int32_t>(free_slot);
      p.outcome[q] = kOutFree;
    }
    t.inserted++;
    __syncwarp();
    return;
  }

  // Full bucket: the best unpinned victim over all its slots.
  int64_t v_slot = -1, v_last = 0, v_freq = 0;
  for (uint32_t j = lane; j < bucket_size; j += kWarp) {
    const int64_t s = base + j;
    const int64_t ls = p.last[s];
    if (ls >= pin) continue;
    const int64_t fr = p.freq[s];
    if (Better(p.policy, s, ls, fr, v_slot, v_last, v_freq)) {
      v_slot = s;
      v_last = ls;
      v_freq = fr;
    }
  }
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) {
    const int64_t o_slot = __shfl_xor_sync(kFullMask, v_slot, off);
    const int64_t o_last = __shfl_xor_sync(kFullMask, v_last, off);
    const int64_t o_freq = __shfl_xor_sync(kFullMask, v_freq, off);
    if (Better(p.policy, o_slot, o_last, o_freq, v_slot, v_last, v_freq)) {
      v_slot = o_slot;
      v_last = o_last;
      v_freq = o_freq;
    }
  }
  if (v_slot < 0 || t.evictions >= p.max_evictions) {
    t.failed++;  // slot stays -1 (prep)
    return;
  }
  if (lane == 0) {
    p.vkey[q] = p.keys[v_slot];
    p.vlast[q] = v_last;
    p.vfreq[q] = v_freq;
    p.ev_flag[q] = 1;
    p.keys[v_slot] = key;
    p.last[v_slot] = step;
    p.freq[v_slot] = 1;
    p.slots[q] = static_cast<int32_t>(v_slot);
    p.outcome[q] = kOutVictim;
  }
  t.evictions++;
  t.inserted++;
  t.evicted++;
  __syncwarp();
}

__device__ void FlushTally(const ProbeParams& p, const Tally& t, unsigned lane) {
  if (lane != 0) return;
  if (t.hits) atomicAdd(p.status + kStHits, t.hits);
  if (t.inserted) atomicAdd(p.status + kStInserted, t.inserted);
  if (t.evicted) atomicAdd(p.status + kStEvicted, t.evicted);
  if (t.failed) atomicAdd(p.status + kStFailed, t.failed);
}

// Rows accessed at or after this step are not evicted: pin_from, at most step
// (as std::min on CPU).
__device__ __forceinline__ int64_t PinFrom(const ProbeParams& p) {
  const int64_t step = *p.step;
  const int64_t pin_from = *p.pin_from;
  return pin_from < step ? pin_from : step;
}

// Parallel path: warp w starts at sorted position w and works only if that
// position begins a run of one bucket (every bucket has exactly one run).
__global__ void ProbeRunsKernel(ProbeParams p, const uint32_t* __restrict__ sorted_bucket,
                                const int32_t* __restrict__ sorted_q) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const unsigned lane = threadIdx.x % kWarp;
  if (w >= p.n) return;  // warp-uniform from here on
  const uint32_t bucket = sorted_bucket[w];
  if (static_cast<uint64_t>(bucket) == p.num_buckets) return;  // reserved or padding
  if (w > 0 && sorted_bucket[w - 1] == bucket) return;          // not a run start
  const int64_t step = *p.step;
  const int64_t pin = PinFrom(p);
  Tally t;
  for (int64_t r = w; r < p.n && sorted_bucket[r] == bucket; ++r) {
    const int64_t q = sorted_q[r];
    ProcessQuery(p, q, p.query[q], step, pin, lane, t);
  }
  FlushTally(p, t, lane);
}

// Sequential path (E < n): one warp, every first occurrence in query order.
__global__ void ProbeSequentialKernel(ProbeParams p) {
  const unsigned lane = threadIdx.x % kWarp;
  if (blockIdx.x != 0 || threadIdx.x >= kWarp) return;
  const int64_t step = *p.step;
  const int64_t pin = PinFrom(p);
  Tally t;
  for (int64_t q = 0; q < p.n; ++q) {
    const int64_t key = p.query[q];
    if (IsReserved(key) || p.repeat_of[q] >= 0 || p.found[q]) continue;
    ProcessQuery(p, q, key, step, pin, lane, t);
  }
  FlushTally(p, t, lane);
}

}  // namespace

LaunchStatus LaunchProbeRuns(const ProbeParams& p, const uint32_t* sorted_bucket,
                             const int32_t* sorted_q, cudaStream_t stream) {
  const unsigned warp_blocks = static_cast<unsigned>(CeilDiv(p.n, kWarpsPerBlock));
  ProbeRunsKernel<<<warp_blocks, kThreads, 0, stream>>>(p, sorted_bucket, sorted_q);
  HYPERECA_CUDA_LAUNCHED("launching the find_or_insert probe kernel");
  return {};
}

LaunchStatus LaunchProbeSequential(const ProbeParams& p, cudaStream_t stream) {
  ProbeSequentialKernel<<<1, kWarp, 0, stream>>>(p);
  HYPERECA_CUDA_LAUNCHED("launching the find_or_insert sequential probe kernel");
  return {};
}

}  // namespace hypereca::cuda
