// Native unit tests of the XLA-free core (hash, probe, erase, init, optim, enums,
// the host store's index).
// Built and run by tests/test_native.py with the host compiler; prints
// "name value..." lines for the cross-checks against the numpy twins.
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "hypereca/common.h"
#include "hypereca/dtype.h"
#include "hypereca/enums.h"
#include "hypereca/erase.h"
#include "hypereca/hash.h"
#include "hypereca/host_index.h"
#include "hypereca/init.h"
#include "hypereca/optim.h"
#include "hypereca/probe.h"

using namespace hypereca;

#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)

struct SmallTable {
  TableGeometry g;
  std::vector<int64_t> keys, last, freq;
  SmallTable(int64_t capacity, uint32_t bucket)
      : keys(capacity, kEmptyKey), last(capacity, 0), freq(capacity, 0) {
    g.capacity = capacity;
    g.bucket_size = bucket;
    g.num_buckets = capacity / bucket;
    CHECK(g.Valid());
  }
  ProbeResult Insert(int64_t key, int64_t step, int64_t pin_from,
                     ScorePolicy policy = ScorePolicy::kLru) {
    ProbeResult p = ProbeForInsert(keys.data(), last.data(), freq.data(), g, policy,
                                   pin_from, key);
    if (p.outcome == ProbeOutcome::kFound) {
      last[p.slot] = step;
      freq[p.slot]++;
    } else if (p.outcome == ProbeOutcome::kFree || p.outcome == ProbeOutcome::kVictim) {
      keys[p.slot] = key;
      last[p.slot] = step;
      freq[p.slot] = 1;
    }
    return p;
  }
};

void TestProbeInsertFindErase() {
  SmallTable t(16, 8);
  for (int64_t k = 0; k < 100; ++k) {
    ProbeResult p = t.Insert(k, 1, 1);
    if (p.outcome == ProbeOutcome::kNoRoom) continue;
    CHECK(p.outcome == ProbeOutcome::kFree);
    CHECK(FindSlot(t.keys.data(), t.g, k) == p.slot);
    CHECK(static_cast<uint64_t>(p.slot / 8) == t.g.BucketOfKey(k));
  }
  // full buckets, everything pinned at step 1: no room for new keys
  int64_t live = 0;
  for (int64_t s = 0; s < 16; ++s) live += !IsReserved(t.keys[s]);
  CHECK(live == 16);
  CHECK(t.Insert(1000, 1, 1).outcome == ProbeOutcome::kNoRoom);
  // step 2: the lowest-slot row of the bucket is the victim (all scores equal)
  const int64_t b = static_cast<int64_t>(t.g.BucketOfKey(1000)) * 8;
  ProbeResult v = ProbeForInsert(t.keys.data(), t.last.data(), t.freq.data(), t.g,
                                 ScorePolicy::kLru, 2, 1000);
  CHECK(v.outcome == ProbeOutcome::kVictim && v.slot == b);
  // erase every key of one bucket: the bucket empties completely (no tombstones left)
  for (int64_t s = b; s < b + 8; ++s) FreeSlot(t.keys.data(), t.last.data(), t.freq.data(), t.g, s);
  for (int64_t s = b; s < b + 8; ++s) CHECK(t.keys[s] == kEmptyKey);
}

void TestTombstonesKeepChains() {
  SmallTable t(8, 8);
  std::vector<int64_t> placed;
  for (int64_t k = 0; k < 6; ++k) {
    CHECK(t.Insert(k * 977, 1, 1).outcome == ProbeOutcome::kFree);
    placed.push_back(k * 977);
  }
  // erase a key in the middle of some probe chain; the others stay findable
  const int64_t s = FindSlot(t.keys.data(), t.g, placed[2]);
  FreeSlot(t.keys.data(), t.last.data(), t.freq.data(), t.g, s);
  CHECK(FindSlot(t.keys.data(), t.g, placed[2]) == -1);
  for (size_t i = 0; i < placed.size(); ++i) {
    if (i != 2) CHECK(FindSlot(t.keys.data(), t.g, placed[i]) >= 0);
  }
  // re-inserting it reuses a free slot and is findable
  CHECK(t.Insert(placed[2], 2, 2).outcome == ProbeOutcome::kFree);
  CHECK(FindSlot(t.keys.data(), t.g, placed[2]) >= 0);
}

void TestLfuVictim() {
  SmallTable t(4, 4);
  for (int64_t k = 1; k <= 4; ++k) t.Insert(k, 1, 1, ScorePolicy::kLfu);
  t.Insert(1, 2, 2, ScorePolicy::kLfu);
  t.Insert(2, 2, 2, ScorePolicy::kLfu);
  t.Insert(4, 2, 2, ScorePolicy::kLfu);
  ProbeResult v = ProbeForInsert(t.keys.data(), t.last.data(), t.freq.data(), t.g,
                                 ScorePolicy::kLfu, 3, 99);
  CHECK(v.outcome == ProbeOutcome::kVictim && t.keys[v.slot] == 3);
}

void TestBf16RoundTrip() {
  CHECK(ToF32(FromF32<Bf16>(1.0f)) == 1.0f);
  CHECK(FromF32<Bf16>(1.0f + 1.0f / 256).bits == FromF32<Bf16>(1.0f).bits);  // ties to even
  CHECK(std::isnan(ToF32(FromF32<Bf16>(NAN))));
  CHECK(ToF32(FromF32<Bf16>(-3.5f)) == -3.5f);
}

void TestOptimizers() {
  float hp[kNumHParams] = {};
  hp[kLr] = 0.5f;
  float w[2] = {1.f, -1.f};
  float g[2] = {2.f, 4.f};
  UpdateRow<float>(OptimizerKind::kSgd, hp, 2, w, nullptr, g);
  CHECK(w[0] == 0.f && w[1] == -3.f);
  float s[1] = {0.f};
  hp[kEps] = 0.f;
  float w2[2] = {0.f, 0.f};
  UpdateRow<float>(OptimizerKind::kRowwiseAdagrad, hp, 2, w2, s, g);
  CHECK(s[0] == 10.f);  // mean(4, 16)
  CHECK(std::fabs(w2[0] + 0.5f * 2.f / std::sqrt(10.f)) < 1e-6f);
  float bad[2] = {1.f, INFINITY};
  CHECK(!AllFinite(bad, 2) && AllFinite(g, 2));
  CHECK(StateWidth(OptimizerKind::kAdam, 4) == 9 && StateWidth(OptimizerKind::kFtrl, 4) == 8);
}

// Every enumerator's name is at its value, every state width is defined, and
// the range checks accept exactly 0 .. count-1.
void TestEnums() {
  CHECK(std::strcmp(kScorePolicyNames[static_cast<int>(ScorePolicy::kLfu)], "lfu") == 0);
  CHECK(std::strcmp(kInitKindNames[static_cast<int>(InitKind::kConstant)], "constant") == 0);
  CHECK(std::strcmp(kOptimizerKindNames[static_cast<int>(OptimizerKind::kRowwiseAdagrad)],
                    "rowwise_adagrad") == 0);
  CHECK(std::strcmp(kExportModeNames[static_cast<int>(ExportMode::kScoreAtLeast)],
                    "at_least") == 0);
  for (int32_t k = 0; k < kNumOptimizerKinds; ++k) {
    CHECK(StateWidth(static_cast<OptimizerKind>(k), 3) >= 0);
  }
  CHECK(IsValidScorePolicy(0) && IsValidScorePolicy(kNumScorePolicies - 1));
  CHECK(!IsValidScorePolicy(-1) && !IsValidScorePolicy(kNumScorePolicies));
  CHECK(IsValidInitKind(kNumInitKinds - 1) && !IsValidInitKind(kNumInitKinds));
  CHECK(IsValidOptimizer(kNumOptimizerKinds - 1) && !IsValidOptimizer(kNumOptimizerKinds));
  CHECK(IsValidExportMode(kNumExportModes - 1) && !IsValidExportMode(kNumExportModes));
  CHECK(!IsValidInitKind(-1) && !IsValidOptimizer(-1) && !IsValidExportMode(-1));
}

// "enum TABLE name value" lines: the enumerations as the header defines them,
// compared by tests/test_native.py with the nanobind module's CONSTANTS.
template <size_t N>
void PrintEnum(const char* table, const char* const (&names)[N]) {
  for (size_t i = 0; i < N; ++i) std::printf("enum %s %s %zu\n", table, names[i], i);
}

// The host store's index against a std::map: a small index (64 slots, up to
// 32 keys) so long probe runs wrap around, and removals in random order must
// leave every remaining key findable (backward-shift deletion).
void TestHostIndex() {
  uint64_t rng = 12345;
  auto next = [&rng] { return rng = Mix64(rng + kGolden); };
  for (int round = 0; round < 200; ++round) {
    HostIndex index(HostIndexSlots(32));
    CHECK(index.slots() == 64);
    std::map<int64_t, int64_t> ref;
    for (int op = 0; op < 300; ++op) {
      const int64_t key = static_cast<int64_t>(next() % 48) - 3;  // 48 ids: many repeats
      const int64_t k = IsReserved(key) ? INT64_MIN - key - 1 : key;  // INT64_MIN, INT64_MIN + 1
      const uint64_t h = HostHash(k);
      if (next() % 2 && ref.size() < 32 && !ref.count(k)) {
        index.Insert(k, h, op);
        ref[k] = op;
      } else {
        const auto it = ref.find(k);
        CHECK(index.Remove(k, h) == (it == ref.end() ? -1 : it->second));
        if (it != ref.end()) ref.erase(it);
      }
      for (const auto& [rk, pos] : ref) CHECK(index.Find(rk, HostHash(rk)) == pos);
    }
  }
  CHECK(HostIndex().Find(7, HostHash(7)) == -1 && HostIndex().Remove(7, HostHash(7)) == -1);
}

int main() {
  TestProbeInsertFindErase();
  TestTombstonesKeepChains();
  TestLfuVictim();
  TestBf16RoundTrip();
  TestOptimizers();
  TestEnums();
  TestHostIndex();
  PrintEnum("POLICIES", kScorePolicyNames);
  PrintEnum("INIT_KINDS", kInitKindNames);
  PrintEnum("OPTIMIZERS", kOptimizerKindNames);
  PrintEnum("EXPORT_MODES", kExportModeNames);
  // Cross-check values for the numpy twins (read by tests/test_native.py).
  const int64_t keys[] = {0, 1, -3, 123456789012345, INT64_MIN, INT64_MAX};
  for (int64_t k : keys) {
    std::printf("mix64 %lld %llu\n", static_cast<long long>(k),
                static_cast<unsigned long long>(Mix64(static_cast<uint64_t>(k))));
    std::printf("owner %lld %u\n", static_cast<long long>(k), OwnerOf(k, 7));
    std::printf("bucket %lld %llu\n", static_cast<long long>(k),
                static_cast<unsigned long long>(BucketOf(BucketHash(k), 1000)));
    for (uint32_t c = 0; c < 3; ++c) {
      std::printf("init %lld %u %.9g %.9g\n", static_cast<long long>(k), c,
                  InitValue(RowSeed(42, k), c, InitKind::kUniform, 0.5f),
                  InitValue(RowSeed(42, k), c, InitKind::kNormal, 2.0f));
    }
  }
  std::printf("ok\n");
  return 0;
}
