// Staging of a batch's host-tier rows (contracts in ffi/include/hypereca/host_stage.h).
#include "hypereca/host_stage.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "hypereca/hash.h"
#include "hypereca/threads.h"

namespace hypereca {
namespace {

// Rows (padding included) one Pack thread is worth: below this a second
// thread's start-up costs more than the copies it takes over.
constexpr int64_t kPackRowsPerThread = 1 << 15;

// Tables per worker, longest first to the least loaded worker (tables' key
// counts vary tenfold; round-robin left one thread with most of them).
std::vector<std::vector<size_t>> Balance(const std::vector<StageTable>& tables, int workers) {
  std::vector<size_t> order(tables.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tables[a].n > tables[b].n; });
  std::vector<std::vector<size_t>> work(workers);
  std::vector<int64_t> load(workers, 0);
  for (size_t i : order) {
    const int w = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    work[w].push_back(i);
    load[w] += tables[i].n;
  }
  return work;
}

}  // namespace

HostStager::HostStager(int64_t value_bytes, int64_t state_width, int32_t num_shards,
                       int32_t threads)
    : value_bytes_(value_bytes),
      state_width_(state_width),
      num_shards_(num_shards),
      threads_(threads) {
  if (value_bytes <= 0 || state_width < 0 || num_shards < 1 || threads < 1) {
    throw std::invalid_argument(
        "host stager: need value_bytes > 0, state_width >= 0, num_shards >= 1 and "
        "threads >= 1; got value_bytes=" + std::to_string(value_bytes) +
        " state_width=" + std::to_string(state_width) + " num_shards=" +
        std::to_string(num_shards) + " threads=" + std::to_string(threads));
  }
}

int64_t HostStager::Collect(const std::vector<StageTable>& tables, bool take,
                            const uint8_t* local) {
  // Everything that can fail happens here, before any store is touched.
  for (size_t i = 0; i < tables.size(); ++i) {
    const HostStoreConfig& c = tables[i].store->config();
    if (c.value_bytes != value_bytes_ || c.state_width != state_width_) {
      throw std::invalid_argument(
          "host stager: table " + std::to_string(i) + "'s store holds rows of value_bytes=" +
          std::to_string(c.value_bytes) + " state_width=" + std::to_string(c.state_width) +
          ", the stager's are " + std::to_string(value_bytes_) + " and " +
          std::to_string(state_width_) + " (one stager per row layout)");
    }
    for (int64_t j = 0; j < tables[i].n; ++j) {
      if (tables[i].keys[j] == kErasedKey) {
        throw std::invalid_argument(
            "host stager: table " + std::to_string(i) + " id [" + std::to_string(j) + "] is " +
            "the reserved key " + std::to_string(kErasedKey) + "; nothing was looked up");
      }
    }
  }
  tables_.resize(tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {  // no allocation on the worker threads
    Table& t = tables_[i];
    const size_t n = static_cast<size_t>(tables[i].n);
    t.keys.resize(n);
    t.owner.resize(n);
    t.found.resize(n);
    t.values.resize(n * value_bytes_);
    t.state.resize(n * state_width_);
    t.last.resize(n);
    t.freq.resize(n);
    t.order.resize(n);
    t.count.assign(num_shards_, 0);
    t.start.resize(num_shards_ + 1);
  }
  const int workers = static_cast<int>(std::min<size_t>(threads_, std::max<size_t>(tables.size(), 1)));
  const std::vector<std::vector<size_t>> work = Balance(tables, workers);
  RunThreads(workers, [&](int w) {
    for (size_t i : work[w]) CollectTable(tables[i], take, local, tables_[i]);
  });
  looked_up_ = found_ = most_ = 0;
  for (const Table& t : tables_) {
    looked_up_ += static_cast<int64_t>(t.keys.size());
    for (int64_t c : t.count) {
      found_ += c;
      most_ = std::max(most_, c);
    }
  }
  return most_;
}

void HostStager::CollectTable(const StageTable& in, bool take, const uint8_t* local, Table& t) {
  int64_t m = 0;
  for (int64_t j = 0; j < in.n; ++j) {
    const int64_t key = in.keys[j];
    if (key == kPaddingKey) continue;
    const uint32_t owner = OwnerOf(key, num_shards_);
    if (!local[owner]) continue;
    t.keys[m] = key;
    t.owner[m++] = owner;
  }
  t.keys.resize(m);  // shrinks: no allocation
  HostRowsOut out;
  out.zero_misses = false;  // only found rows are read (PackTable)
  out.found = t.found.data();
  out.values = t.values.data();
  out.state = state_width_ ? t.state.data() : nullptr;
  out.last_step = t.last.data();
  out.freq = t.freq.data();
  if (take) {
    in.store->Take(t.keys.data(), m, out);
  } else {
    in.store->Peek(t.keys.data(), m, out);
  }
  // Found positions by owner (a stable counting sort), then by key within
  // each owner: already so when the ids came sorted (distinct_ids' are).
  for (int64_t j = 0; j < m; ++j) t.count[t.owner[j]] += t.found[j];
  std::vector<int64_t>& start = t.start;
  start[0] = 0;
  for (int32_t d = 0; d < num_shards_; ++d) start[d + 1] = start[d] + t.count[d];
  const int64_t f = start[num_shards_];
  for (int64_t j = 0; j < m; ++j) {
    if (t.found[j]) t.order[start[t.owner[j]]++] = j;
  }
  const auto by_key = [&](int64_t a, int64_t b) { return t.keys[a] < t.keys[b]; };
  for (int64_t d = 0, lo = 0; d < num_shards_; lo += t.count[d++]) {
    const auto first = t.order.begin() + lo, last = first + t.count[d];
    if (!std::is_sorted(first, last, by_key)) std::sort(first, last, by_key);
  }
  t.order.resize(f);
}

void HostStager::Pack(int64_t S, const HostRowsOut& out) const {
  if (S < most_) {
    throw std::invalid_argument("host stager: pack into blocks of " + std::to_string(S) +
                                " rows, but one holds " + std::to_string(most_) + " rows");
  }
  const int T = static_cast<int>(tables_.size());
  // A thread costs ~40 us to start: worth it only for many rows.
  const int64_t rows = static_cast<int64_t>(num_shards_) * T * S;
  const int workers = static_cast<int>(
      std::min<int64_t>({threads_, std::max(T, 1), 1 + rows / kPackRowsPerThread}));
  RunThreads(workers, [&](int w) {
    for (int ti = w; ti < T; ti += workers) PackTable(ti, S, out);
  });
}

void HostStager::PackTable(int64_t ti, int64_t S, const HostRowsOut& out) const {
  const Table& t = tables_[ti];
  const int64_t T = num_tables(), vb = value_bytes_, sw = state_width_;
  auto pad = [&](int64_t row, int64_t rows) {
    std::fill(out.keys + row, out.keys + row + rows, kPaddingKey);
    std::memset(out.values + row * vb, 0, rows * vb);
    if (sw) std::memset(out.state + row * sw, 0, rows * sw * sizeof(float));
    std::fill(out.last_step + row, out.last_step + row + rows, 0);
    std::fill(out.freq + row, out.freq + row + rows, 0);
  };
  int64_t next = 0;  // into t.order, by owner then key
  for (int64_t d = 0; d < num_shards_; ++d) {
    const int64_t base = (d * T + ti) * S, c = t.count[d];
    // the block's keys in signed order: negative ids, the padding, the rest
    int64_t neg = 0;
    while (neg < c && t.keys[t.order[next + neg]] < kPaddingKey) ++neg;
    for (int64_t k = 0; k < c; ++k) {
      const int64_t j = t.order[next + k], row = base + (k < neg ? k : k + S - c);
      out.keys[row] = t.keys[j];
      std::memcpy(out.values + row * vb, t.values.data() + j * vb, vb);
      if (sw) std::memcpy(out.state + row * sw, t.state.data() + j * sw, sw * sizeof(float));
      out.last_step[row] = t.last[j];
      out.freq[row] = t.freq[j];
    }
    pad(base + neg, S - c);
    next += c;
  }
}

}  // namespace hypereca
