// The two translation units of find_or_insert on CUDA share this:
// find_or_insert_kernels.cu runs passes 1-3 and 5-9 (see its header comment),
// find_or_insert_probe_kernels.cu runs pass 4, the probe, where each query of
// a bucket's run is applied in query order by one warp (hit, insert into a
// free slot, or eviction of the best unpinned victim). Device code is not
// shared across the two (whole-program compilation): only the launch
// configuration, the per-query outcome codes, the probe's parameters and its
// host launchers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_util.cuh"
#include "hypereca/enums.h"

namespace hypereca::cuda {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;

// outcome[q] of a query.
constexpr uint8_t kOutNone = 0;    // padding, reserved, hit, refused or a repeat
constexpr uint8_t kOutFree = 1;    // inserted into an empty slot or a tombstone
constexpr uint8_t kOutVictim = 2;  // inserted in place of an evicted row

// Pass 4's view of the table and of the per-query scratch. Device pointers;
// the warp probing a query writes keys, last and freq of the slot it picks
// and the query's slot, found, outcome, ev_flag and victim (vkey, vlast,
// vfreq); values and optimizer state are left to pass 7.
struct ProbeParams {
  int64_t* keys;
  int64_t* last;
  int64_t* freq;
  uint32_t bucket_size;
  uint64_t num_buckets;
  ScorePolicy policy;
  const int64_t* query;
  const int32_t* repeat_of;  // >= 0: a repeat, decided by its first occurrence
  int64_t n;
  const int64_t* step;
  const int64_t* pin_from;
  int64_t max_evictions;  // binding only on the sequential path
  int32_t* slots;
  bool* found;
  uint8_t* outcome;
  int32_t* ev_flag;
  int64_t* vkey;
  int64_t* vlast;
  int64_t* vfreq;
  unsigned long long* status;
};

// Pass 4, parallel path: the queries to probe sorted by bucket (sentinel
// bucket num_buckets for the others), one warp per bucket run, in query order
// within a run. Enqueues on `stream`; p.n warps.
LaunchStatus LaunchProbeRuns(const ProbeParams& p, const uint32_t* sorted_bucket,
                             const int32_t* sorted_q, cudaStream_t stream);

// Pass 4, sequential path (eviction outputs smaller than the batch): one warp
// over every first occurrence in query order, refusing evictions past
// p.max_evictions exactly as the CPU does.
LaunchStatus LaunchProbeSequential(const ProbeParams& p, cudaStream_t stream);

}  // namespace hypereca::cuda
