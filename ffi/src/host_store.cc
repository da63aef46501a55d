// The host tier's store (contracts in ffi/include/hypereca/host_store.h).
#include "hypereca/host_store.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "hypereca/hash.h"
#include "hypereca/host_index.h"
#include "hypereca/threads.h"
#include "host_record.h"

namespace hypereca {
namespace {

using namespace record;

constexpr int kChunk = 4;   // keys per pipeline chunk
constexpr int64_t kLag = 4;  // chunks between the stages of one key
constexpr int kCursorShift = 40;               // export cursor: partition << 40 | position
constexpr int64_t kMinCapacity = 64;           // rows of a partition's first allocation

inline void PrefetchRange(const uint8_t* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 1, 1);
}

int32_t PartitionOf(uint64_t h, int partitions) {
  return static_cast<int32_t>(FastRange32(static_cast<uint32_t>(h >> 32), partitions));
}

// Up to kChunk query keys of one thread: query index, hash, partition
// (-1 for padding) and a position filled by the probe stage.
struct Chunk {
  int64_t idx[kChunk];
  uint64_t h[kChunk];
  int32_t part[kChunk];
  int64_t pos[kChunk];
  int cnt = 0;
};

}  // namespace

struct HostStore::Partition {
  std::unique_ptr<uint8_t[]> records;
  HostIndex index;                 // HostIndexSlots(cap) slots
  std::vector<int64_t> free_list;  // holes below hw, reused last-in first-out
  int64_t cap = 0;                 // records allocated
  int64_t hw = 0;                  // records ever used (holes included)
  int64_t live = 0;                // resident rows

  uint8_t* Rec(int64_t pos, int64_t stride) const { return records.get() + pos * stride; }
  const HostSlot* Home(uint64_t h) const { return index.Home(h); }
  int64_t Find(int64_t key, uint64_t h) const { return index.Find(key, h); }
  int64_t Remove(int64_t key, uint64_t h) { return index.Remove(key, h); }

  int64_t Allocate() {
    if (!free_list.empty()) {
      const int64_t pos = free_list.back();
      free_list.pop_back();
      return pos;
    }
    return hw++;
  }

  // Frees record pos (its key already out of the index).
  void Release(int64_t pos, int64_t stride) {
    StoreI64(Rec(pos, stride) + kKeyOff, kEmptyKey);
    free_list.push_back(pos);
    --live;
  }

  // Grows to new_cap records; strong exception guarantee (allocates first).
  void Reserve(int64_t new_cap, int64_t stride) {
    if (new_cap <= cap) return;
    std::unique_ptr<uint8_t[]> r(new uint8_t[new_cap * stride]);
    const int64_t slots = HostIndexSlots(new_cap);
    HostIndex idx(slots != index.slots() ? slots : 0);
    std::vector<int64_t> fl;
    fl.reserve(new_cap);
    fl = free_list;  // keeps the reserved capacity: n <= capacity
    if (hw) std::memcpy(r.get(), records.get(), hw * stride);
    records = std::move(r);
    free_list = std::move(fl);
    cap = new_cap;
    if (idx.slots()) {
      index = std::move(idx);
      for (int64_t p = 0; p < hw; ++p) {
        const int64_t k = LoadI64(Rec(p, stride) + kKeyOff);
        if (k != kEmptyKey) index.Insert(k, HostHash(k), p);
      }
    }
  }
};

namespace {

int64_t PartBytes(int64_t cap, int64_t stride) {
  return cap * stride + HostIndexSlots(cap) * static_cast<int64_t>(sizeof(HostSlot)) +
         cap * static_cast<int64_t>(sizeof(int64_t));
}

// Runs the keys thread t of `threads` owns -- those of partitions p with
// p % threads == t, and (thread 0) the padding -- through three stages, in
// small chunks, software-pipelined so that each cache miss has kLag chunks of
// other work to hide behind: (1) hash, prefetch the index slot; kLag chunks
// later (2) probe(chunk): index work, prefetch the records; kLag chunks later
// (3) finish(chunk): copy rows. Later chunks are probed before earlier ones
// are finished; each stage sees the chunks in call order.
template <class Probe, class Finish>
void Pipeline(const std::vector<HostStore::Partition>& parts, const int64_t* keys, int64_t n,
              int t, int threads, Probe&& probe, Finish&& finish) {
  constexpr int64_t kRing = 2 * kLag + 1;
  const int partitions = static_cast<int>(parts.size());
  Chunk ring[kRing];
  int64_t full = 0;  // chunks filled so far; ring[full % kRing] is being filled
  auto advance = [&] {
    if (full >= kLag) probe(ring[(full - kLag) % kRing]);
    if (full >= 2 * kLag) finish(ring[(full - 2 * kLag) % kRing]);
    ++full;
    ring[full % kRing].cnt = 0;
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = keys[i];
    uint64_t h = 0;
    int32_t p = -1;
    if (k != kEmptyKey) {
      h = HostHash(k);
      p = PartitionOf(h, partitions);
      if (threads > 1 && p % threads != t) continue;
      __builtin_prefetch(parts[p].Home(h), 1, 1);
    } else if (t != 0) {
      continue;
    }
    Chunk& c = ring[full % kRing];
    c.idx[c.cnt] = i;
    c.h[c.cnt] = h;
    c.part[c.cnt] = p;
    if (++c.cnt == kChunk) advance();
  }
  if (ring[full % kRing].cnt) advance();
  // Drain: chunks [full - 2 kLag, full) still need their later stages.
  for (int64_t k = std::max<int64_t>(full - kLag, 0); k < full; ++k) probe(ring[k % kRing]);
  for (int64_t k = std::max<int64_t>(full - 2 * kLag, 0); k < full; ++k) finish(ring[k % kRing]);
}

int64_t TotalBytes(const std::vector<HostStore::Partition>& parts, int64_t stride) {
  int64_t b = 0;
  for (const auto& p : parts) b += PartBytes(p.cap, stride);
  return b;
}

int ThreadsFor(int64_t n, const HostStoreConfig& c) {
  return n >= c.parallel_min_keys ? c.threads : 1;
}

// Record capacities after a put that adds at most misses[p] keys to partition
// p: doubling, or exactly what is needed.
std::vector<int64_t> PlanCaps(const std::vector<HostStore::Partition>& parts,
                              const std::vector<int64_t>& misses, bool doubling) {
  std::vector<int64_t> caps(parts.size());
  for (size_t p = 0; p < parts.size(); ++p) {
    const auto& part = parts[p];
    const int64_t reuse = std::min<int64_t>(misses[p], part.free_list.size());
    const int64_t need = part.hw + misses[p] - reuse;
    caps[p] = need <= part.cap ? part.cap
              : doubling       ? std::max({need, 2 * part.cap, kMinCapacity})
                               : need;
  }
  return caps;
}

int64_t CapsBytes(const std::vector<int64_t>& caps, int64_t stride) {
  int64_t b = 0;
  for (int64_t c : caps) b += PartBytes(c, stride);
  return b;
}

// Keys of the call per partition: an upper bound of the keys a put adds.
std::vector<int64_t> KeysPerPartition(const int64_t* keys, int64_t n, int partitions) {
  std::vector<int64_t> count(partitions, 0);
  for (int64_t i = 0; i < n; ++i) ++count[PartitionOf(HostHash(keys[i]), partitions)];
  return count;
}

// Distinct values of `keys` (none equal to kEmptyKey), by a scratch hash set.
int64_t CountDistinct(const std::vector<int64_t>& keys) {
  uint64_t slots = 16;
  while (slots < 2 * keys.size()) slots <<= 1;
  std::vector<int64_t> set(slots, kEmptyKey);
  int64_t distinct = 0;
  for (int64_t k : keys) {
    uint64_t i = Mix64(static_cast<uint64_t>(k)) & (slots - 1);
    while (set[i] != kEmptyKey && set[i] != k) i = (i + 1) & (slots - 1);
    if (set[i] == kEmptyKey) {
      set[i] = k;
      ++distinct;
    }
  }
  return distinct;
}

// Replaces misses[p] (absent keys, duplicates counted each time) by the
// number of distinct absent keys, for the partitions p with exact[p].
void DedupMisses(const HostRowsIn& rows, const std::vector<int64_t>& pos1,
                 const std::vector<bool>& exact, std::vector<int64_t>& misses) {
  const int partitions = static_cast<int>(misses.size());
  std::vector<std::vector<int64_t>> absent(partitions);
  for (int64_t i = 0; i < rows.n; ++i) {
    if (pos1[i] >= 0) continue;
    const int32_t p = PartitionOf(HostHash(rows.keys[i]), partitions);
    if (exact[p]) absent[p].push_back(rows.keys[i]);
  }
  for (int p = 0; p < partitions; ++p) {
    if (exact[p]) misses[p] = CountDistinct(absent[p]);
  }
}

void CheckKeys(const int64_t* keys, int64_t n, bool allow_padding, const char* op) {
  const int64_t bad = FirstReservedKey(keys, n, allow_padding);
  if (bad < 0) return;
  throw std::invalid_argument(
      std::string("host store ") + op + ": keys[" + std::to_string(bad) + "] = " +
      std::to_string(keys[bad]) + " is a reserved key (" + std::to_string(kEmptyKey) +
      " is the padding id, " + std::to_string(kErasedKey) +
      " the erased marker); nothing was applied");
}

// Misses left unfilled need `found` to tell them apart.
void CheckOut(const HostRowsOut& out, const char* op) {
  if (!out.zero_misses && !out.found) {
    throw std::invalid_argument(std::string("host store ") + op +
                                ": zero_misses=false needs a found array");
  }
}

}  // namespace

int64_t FirstReservedKey(const int64_t* keys, int64_t n, bool allow_padding) {
  for (int64_t i = 0; i < n; ++i) {
    if (keys[i] == kErasedKey || (!allow_padding && keys[i] == kEmptyKey)) return i;
  }
  return -1;
}

HostStore::HostStore(const HostStoreConfig& config) : config_(config) {
  if (config.value_bytes <= 0 || config.state_width < 0 || config.memory_limit_bytes < 0 ||
      config.partitions < 1 || config.partitions > (1 << 16) || config.threads < 1 ||
      config.threads > config.partitions || config.parallel_min_keys < 1) {
    throw std::invalid_argument(
        "host store: need value_bytes > 0, state_width >= 0, memory_limit_bytes >= 0, "
        "1 <= partitions <= 65536, 1 <= threads <= partitions and parallel_min_keys >= 1; "
        "got value_bytes=" +
        std::to_string(config.value_bytes) + " state_width=" +
        std::to_string(config.state_width) + " memory_limit_bytes=" +
        std::to_string(config.memory_limit_bytes) + " partitions=" +
        std::to_string(config.partitions) + " threads=" + std::to_string(config.threads) +
        " parallel_min_keys=" + std::to_string(config.parallel_min_keys));
  }
  stride_ = RecordStride(config);
  parts_.resize(config.partitions);
  counters_.assign(kNumHostCounters, 0);
}

HostStore::~HostStore() = default;

int64_t HostStore::Size() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& p : parts_) n += p.live;
  return n;
}

int64_t HostStore::Bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t b = 0;
  for (const auto& p : parts_) b += PartBytes(p.cap, stride_);
  return b;
}

std::vector<int64_t> HostStore::Counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void HostStore::set_memory_limit_bytes(int64_t limit) {
  if (limit < 0) {
    throw std::invalid_argument("host store: memory_limit_bytes must be >= 0 (0: no limit), got " +
                                std::to_string(limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  config_.memory_limit_bytes = limit;
}

// Where each key of a put is now (-1: absent) and, per partition, how many
// distinct keys it adds; for the partitions that must grow only.
std::vector<int64_t> HostStore::PlanPut(const HostRowsIn& rows, int threads,
                                        std::vector<int64_t>& misses) {
  const int P = config_.partitions;
  std::vector<int64_t> pos1(rows.n);
  std::fill(misses.begin(), misses.end(), 0);
  RunThreads(threads, [&](int t) {
    Pipeline(
        parts_, rows.keys, rows.n, t, threads,
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            const int64_t pos = parts_[c.part[j]].Find(rows.keys[c.idx[j]], c.h[j]);
            pos1[c.idx[j]] = pos;
            misses[c.part[j]] += pos < 0;
          }
        },
        [](Chunk&) {});
  });
  const std::vector<int64_t> tight = PlanCaps(parts_, misses, false);
  std::vector<bool> grows(P);
  for (int p = 0; p < P; ++p) grows[p] = tight[p] > parts_[p].cap;
  DedupMisses(rows, pos1, grows, misses);
  return pos1;
}

PutResult HostStore::Put(const HostRowsIn& rows) {
  CheckKeys(rows.keys, rows.n, /*allow_padding=*/false, "put");
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t n = rows.n;
  const int P = config_.partitions, T = ThreadsFor(n, config_);
  const int64_t before = TotalBytes(parts_, stride_), limit = config_.memory_limit_bytes;
  // If every key were new, would any partition grow? If not, no plan.
  std::vector<int64_t> misses = KeysPerPartition(rows.keys, n, P), pos1;
  std::vector<int64_t> caps = PlanCaps(parts_, misses, false);
  int64_t after = CapsBytes(caps, stride_);
  if (after > before) {
    pos1 = PlanPut(rows, T, misses);
    auto fits = [&](int64_t b) { return limit == 0 || b <= limit || b <= before; };
    caps = PlanCaps(parts_, misses, true);
    if (!fits(CapsBytes(caps, stride_))) caps = PlanCaps(parts_, misses, false);
    after = CapsBytes(caps, stride_);
    if (!fits(after)) {
      counters_[kHcPutRefused] += n;
      int64_t new_keys = 0;
      for (int64_t m : misses) new_keys += m;
      return {false, new_keys, before, after};
    }
    for (int p = 0; p < P; ++p) parts_[p].Reserve(caps[p], stride_);
  }
  // Insert the absent keys (a duplicate finds its first occurrence's record)
  // and write every row, in call order per partition: the last one wins.
  const RecordLayout lay(config_);
  std::vector<int64_t> inserted(T, 0);
  RunThreads(T, [&](int t) {
    Pipeline(
        parts_, rows.keys, n, t, T,
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            Partition& part = parts_[c.part[j]];
            const int64_t key = rows.keys[c.idx[j]];
            int64_t pos = pos1.empty() ? -1 : pos1[c.idx[j]];
            if (pos < 0) pos = part.Find(key, c.h[j]);
            if (pos < 0) {
              pos = part.Allocate();
              part.index.Insert(key, c.h[j], pos);
              ++part.live;
              ++inserted[t];
            }
            c.pos[j] = pos;
            PrefetchRange(part.Rec(pos, stride_), stride_);
          }
        },
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            lay.Write(parts_[c.part[j]].Rec(c.pos[j], stride_), rows, c.idx[j]);
          }
        });
  });
  int64_t ins = 0;
  for (int64_t x : inserted) ins += x;
  counters_[kHcPutRows] += n;
  counters_[kHcInserted] += ins;
  counters_[kHcOverwritten] += n - ins;
  return {true, ins, before, TotalBytes(parts_, stride_)};
}

PutResult HostStore::MakeRoom(int64_t rows) {
  if (rows < 0) {
    throw std::invalid_argument("host store make_room: rows must be >= 0, got " +
                                std::to_string(rows));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t before = TotalBytes(parts_, stride_), limit = config_.memory_limit_bytes;
  const std::vector<int64_t> misses(config_.partitions, rows);
  std::vector<int64_t> caps = PlanCaps(parts_, misses, false);
  const int64_t exact = CapsBytes(caps, stride_);
  if (exact <= before) return {true, 0, before, before};
  auto fits = [&](int64_t b) { return limit == 0 || b <= limit; };
  const std::vector<int64_t> doubled = PlanCaps(parts_, misses, true);
  if (fits(CapsBytes(doubled, stride_))) {
    caps = doubled;
  } else if (!fits(exact)) {
    return {false, 0, before, exact};
  }
  for (int p = 0; p < config_.partitions; ++p) parts_[p].Reserve(caps[p], stride_);
  return {true, 0, before, TotalBytes(parts_, stride_)};
}

void HostStore::Take(const int64_t* keys, int64_t n, const HostRowsOut& out) {
  CheckKeys(keys, n, /*allow_padding=*/true, "take");
  CheckOut(out, "take");
  std::lock_guard<std::mutex> lock(mu_);
  const int T = ThreadsFor(n, config_);
  const RecordLayout lay(config_);
  std::vector<int64_t> hits(T, 0), misses(T, 0);
  RunThreads(T, [&](int t) {
    Pipeline(
        parts_, keys, n, t, T,
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            c.pos[j] = c.part[j] < 0 ? -1 : parts_[c.part[j]].Remove(keys[c.idx[j]], c.h[j]);
            if (c.pos[j] >= 0) PrefetchRange(parts_[c.part[j]].Rec(c.pos[j], stride_), stride_);
          }
        },
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            if (c.pos[j] < 0) {
              lay.Zero(out, c.idx[j]);
              misses[t] += c.part[j] >= 0;
              continue;
            }
            Partition& part = parts_[c.part[j]];
            lay.Read(part.Rec(c.pos[j], stride_), out, c.idx[j]);
            part.Release(c.pos[j], stride_);
            ++hits[t];
          }
        });
  });
  for (int t = 0; t < T; ++t) {
    counters_[kHcTakeHits] += hits[t];
    counters_[kHcTakeMisses] += misses[t];
  }
}

void HostStore::Peek(const int64_t* keys, int64_t n, const HostRowsOut& out) const {
  CheckKeys(keys, n, /*allow_padding=*/true, "peek");
  CheckOut(out, "peek");
  std::lock_guard<std::mutex> lock(mu_);
  const int T = ThreadsFor(n, config_);
  const RecordLayout lay(config_);
  const bool rows = out.values || out.state || out.last_step || out.freq;
  RunThreads(T, [&](int t) {
    Pipeline(
        parts_, keys, n, t, T,
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            c.pos[j] = c.part[j] < 0 ? -1 : parts_[c.part[j]].Find(keys[c.idx[j]], c.h[j]);
            if (rows && c.pos[j] >= 0) {
              PrefetchRange(parts_[c.part[j]].Rec(c.pos[j], stride_), stride_);
            }
          }
        },
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            if (c.pos[j] < 0) {
              lay.Zero(out, c.idx[j]);
            } else if (rows) {
              lay.Read(parts_[c.part[j]].Rec(c.pos[j], stride_), out, c.idx[j]);
            } else {
              out.found[c.idx[j]] = 1;
            }
          }
        });
  });
}

int64_t HostStore::Erase(const int64_t* keys, int64_t n) {
  CheckKeys(keys, n, /*allow_padding=*/true, "erase");
  std::lock_guard<std::mutex> lock(mu_);
  const int T = ThreadsFor(n, config_);
  std::vector<int64_t> erased(T, 0), misses(T, 0);
  RunThreads(T, [&](int t) {
    Pipeline(
        parts_, keys, n, t, T,
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            c.pos[j] = c.part[j] < 0 ? -1 : parts_[c.part[j]].Remove(keys[c.idx[j]], c.h[j]);
            if (c.pos[j] >= 0) __builtin_prefetch(parts_[c.part[j]].Rec(c.pos[j], stride_), 1, 1);
          }
        },
        [&](Chunk& c) {
          for (int j = 0; j < c.cnt; ++j) {
            if (c.pos[j] >= 0) {
              parts_[c.part[j]].Release(c.pos[j], stride_);
              ++erased[t];
            } else {
              misses[t] += c.part[j] >= 0;
            }
          }
        });
  });
  int64_t total = 0;
  for (int t = 0; t < T; ++t) {
    total += erased[t];
    counters_[kHcEraseMisses] += misses[t];
  }
  counters_[kHcErased] += total;
  return total;
}

std::vector<int64_t> HostStore::EvictOlderThan(int64_t step) {
  std::lock_guard<std::mutex> lock(mu_);
  const int P = config_.partitions;
  int64_t records = 0;
  for (const auto& part : parts_) records += part.hw;
  const int T = ThreadsFor(records, config_);
  std::vector<std::vector<int64_t>> per(P);
  for (int p = 0; p < P; ++p) per[p].reserve(parts_[p].live);  // no allocation in the workers
  RunThreads(T, [&](int t) {
    for (int p = t; p < P; p += T) {
      Partition& part = parts_[p];
      for (int64_t pos = 0; pos < part.hw; ++pos) {
        const uint8_t* rec = part.Rec(pos, stride_);
        const int64_t key = LoadI64(rec + kKeyOff);
        if (key == kEmptyKey || LoadI64(rec + kLastOff) >= step) continue;
        part.Remove(key, HostHash(key));
        part.Release(pos, stride_);
        per[p].push_back(key);
      }
    }
  });
  std::vector<int64_t> keys;
  for (const auto& v : per) keys.insert(keys.end(), v.begin(), v.end());
  counters_[kHcTtlEvicted] += static_cast<int64_t>(keys.size());
  return keys;
}

int64_t HostStore::Export(int64_t cursor, int64_t max_rows, const HostRowsOut& out,
                          int64_t* rows_out) const {
  if (cursor < 0 || max_rows < 0) {
    throw std::invalid_argument("host store export: cursor and max_rows must be >= 0, got " +
                                std::to_string(cursor) + " and " + std::to_string(max_rows));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const RecordLayout lay(config_);
  int64_t p = cursor >> kCursorShift, pos = cursor & ((int64_t{1} << kCursorShift) - 1);
  int64_t rows = 0;
  for (; p < config_.partitions; ++p, pos = 0) {
    const Partition& part = parts_[p];
    for (; pos < part.hw; ++pos) {
      const uint8_t* rec = part.Rec(pos, stride_);
      if (LoadI64(rec + kKeyOff) == kEmptyKey) continue;
      if (rows == max_rows) {
        *rows_out = rows;
        return (p << kCursorShift) | pos;
      }
      lay.Read(rec, out, rows++);
    }
  }
  *rows_out = rows;
  return -1;
}

}  // namespace hypereca
