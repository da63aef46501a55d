// nanobind binding of the host tier's store (hypereca/host_store.h), its
// stager (hypereca/host_stage.h) and settling (hypereca/host_settle.h) into
// the CPU module: numpy arrays in and out, the GIL released around every call.
// Shapes are checked here (std::invalid_argument -> ValueError); dtypes,
// reserved keys and the memory limit are reported with the settings' names
// by jax_hypereca/host_tier.py, which is the only caller.
#include "host_store_bindings.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "hypereca/host_settle.h"
#include "hypereca/host_stage.h"
#include "hypereca/host_store.h"

namespace hypereca {
namespace {

namespace nb = nanobind;

using KeysIn = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using BytesIn = nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using StateIn = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

template <class T>
using NpArray = nb::ndarray<nb::numpy, T>;

// A heap buffer handed to numpy (freed by the array's capsule).
template <class T>
struct OutBuf {
  T* ptr;
  std::vector<size_t> shape;
  OutBuf(std::vector<size_t> s) : shape(std::move(s)) {
    size_t n = 1;
    for (size_t d : shape) n *= d;
    ptr = new T[n > 0 ? n : 1];
  }
  NpArray<T> Release() {
    nb::capsule owner(ptr, [](void* p) noexcept { delete[] static_cast<T*>(p); });
    return NpArray<T>(ptr, shape.size(), shape.data(), owner);
  }
};

void CheckRows(const char* what, size_t got_rows, size_t got_cols, size_t rows,
               size_t cols) {
  if (got_rows != rows || got_cols != cols) {
    throw std::invalid_argument(std::string("host store put: ") + what + " has shape (" +
                                std::to_string(got_rows) + ", " + std::to_string(got_cols) +
                                "), expected (" + std::to_string(rows) + ", " +
                                std::to_string(cols) + ")");
  }
}

nb::tuple Put(HostStore& s, KeysIn keys, BytesIn values, StateIn state, KeysIn last_step,
              KeysIn freq) {
  const auto& c = s.config();
  const size_t n = keys.shape(0);
  CheckRows("values", values.shape(0), values.shape(1), n, c.value_bytes);
  CheckRows("state", state.shape(0), state.shape(1), n, c.state_width);
  CheckRows("last_step", last_step.shape(0), 1, n, 1);
  CheckRows("freq", freq.shape(0), 1, n, 1);
  const HostRowsIn in{keys.data(), values.data(), state.data(), last_step.data(), freq.data(),
                      static_cast<int64_t>(n)};
  PutResult r;
  {
    nb::gil_scoped_release release;
    r = s.Put(in);
  }
  return nb::make_tuple(r.applied, r.new_keys, r.bytes_before, r.bytes_after);
}

// Take (remove=true) or Peek: (found, values, state, last_step, freq).
nb::tuple Lookup(HostStore& s, KeysIn keys, bool remove) {
  const auto& c = s.config();
  const size_t n = keys.shape(0);
  OutBuf<uint8_t> found({n}), values({n, static_cast<size_t>(c.value_bytes)});
  OutBuf<float> state({n, static_cast<size_t>(c.state_width)});
  OutBuf<int64_t> last({n}), freq({n});
  const HostRowsOut out{found.ptr, nullptr, values.ptr, state.ptr, last.ptr, freq.ptr};
  {
    nb::gil_scoped_release release;
    if (remove) {
      s.Take(keys.data(), static_cast<int64_t>(n), out);
    } else {
      s.Peek(keys.data(), static_cast<int64_t>(n), out);
    }
  }
  return nb::make_tuple(found.Release(), values.Release(), state.Release(), last.Release(),
                        freq.Release());
}

NpArray<uint8_t> Contains(const HostStore& s, KeysIn keys) {
  const size_t n = keys.shape(0);
  OutBuf<uint8_t> found({n});
  HostRowsOut out;
  out.found = found.ptr;
  {
    nb::gil_scoped_release release;
    s.Peek(keys.data(), static_cast<int64_t>(n), out);
  }
  return found.Release();
}

int64_t Erase(HostStore& s, KeysIn keys) {
  nb::gil_scoped_release release;
  return s.Erase(keys.data(), static_cast<int64_t>(keys.shape(0)));
}

NpArray<int64_t> EvictOlderThan(HostStore& s, int64_t step) {
  std::vector<int64_t> keys;
  {
    nb::gil_scoped_release release;
    keys = s.EvictOlderThan(step);
  }
  OutBuf<int64_t> out({keys.size()});
  if (!keys.empty()) std::memcpy(out.ptr, keys.data(), keys.size() * sizeof(int64_t));
  return out.Release();
}

// (next cursor or -1, rows, keys, values, state, last_step, freq): arrays of
// min(max_rows, size) rows, the first `rows` of them written.
nb::tuple Export(const HostStore& s, int64_t cursor, int64_t max_rows) {
  const auto& c = s.config();
  if (max_rows < 0) throw std::invalid_argument("host store export: max_rows must be >= 0");
  const size_t m = static_cast<size_t>(std::min(max_rows, s.Size()));
  OutBuf<int64_t> keys({m}), last({m}), freq({m});
  OutBuf<uint8_t> values({m, static_cast<size_t>(c.value_bytes)});
  OutBuf<float> state({m, static_cast<size_t>(c.state_width)});
  const HostRowsOut out{nullptr, keys.ptr, values.ptr, state.ptr, last.ptr, freq.ptr};
  int64_t rows = 0, next = -1;
  {
    nb::gil_scoped_release release;
    next = s.Export(cursor, static_cast<int64_t>(m), out, &rows);
  }
  return nb::make_tuple(next, rows, keys.Release(), values.Release(), state.Release(),
                        last.Release(), freq.Release());
}

using FlagsIn = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Phase 1 of staging: per table a native store and its ids (lists of equal
// length); the most rows of one (owner, table) block.
int64_t Collect(HostStager& s, nb::list stores, nb::list keys, bool take, FlagsIn local) {
  if (nb::len(stores) != nb::len(keys)) {
    throw std::invalid_argument("host stager collect: " + std::to_string(nb::len(stores)) +
                                " stores but " + std::to_string(nb::len(keys)) + " key arrays");
  }
  if (local.shape(0) != static_cast<size_t>(s.num_shards())) {
    throw std::invalid_argument("host stager collect: local has " +
                                std::to_string(local.shape(0)) + " flags for " +
                                std::to_string(s.num_shards()) + " shards");
  }
  // `held` keeps every key array alive until the native call returns: a cast
  // may make a converted copy, which nothing else would hold (destroyed after
  // `release`, with the GIL).
  std::vector<KeysIn> held;
  std::vector<StageTable> tables;
  held.reserve(nb::len(keys));
  for (size_t i = 0; i < nb::len(stores); ++i) {
    held.push_back(nb::cast<KeysIn>(keys[i]));
    const KeysIn& k = held.back();
    tables.push_back({nb::cast<HostStore*>(stores[i]), k.data(), static_cast<int64_t>(k.shape(0))});
  }
  nb::gil_scoped_release release;
  return s.Collect(tables, take, local.data());
}

// Phase 2: (keys, values, state, last_step, freq) of W * T * S rows.
nb::tuple Pack(const HostStager& s, int64_t S, int64_t value_bytes, int64_t state_width) {
  if (S < 0) throw std::invalid_argument("host stager pack: S must be >= 0");
  const size_t rows = static_cast<size_t>(s.num_shards() * s.num_tables() * S);
  OutBuf<int64_t> keys({rows}), last({rows}), freq({rows});
  OutBuf<uint8_t> values({rows, static_cast<size_t>(value_bytes)});
  OutBuf<float> state({rows, static_cast<size_t>(state_width)});
  const HostRowsOut out{nullptr, keys.ptr, values.ptr, state.ptr, last.ptr, freq.ptr};
  {
    nb::gil_scoped_release release;
    s.Pack(S, out);
  }
  return nb::make_tuple(keys.Release(), values.Release(), state.Release(), last.Release(),
                        freq.Release());
}

using TableIn = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Settling: packed rows put into their tables' stores; per table (applied,
// new_keys, bytes_before, bytes_after).
std::vector<nb::tuple> PutPackedRows(nb::list stores, KeysIn keys, BytesIn values,
                                     StateIn state, KeysIn last_step, KeysIn freq,
                                     TableIn table, int threads) {
  std::vector<HostStore*> ptrs;
  for (size_t i = 0; i < nb::len(stores); ++i) ptrs.push_back(nb::cast<HostStore*>(stores[i]));
  const size_t n = keys.shape(0);
  const size_t vb = ptrs.empty() ? values.shape(1) : ptrs[0]->config().value_bytes;
  const size_t sw = ptrs.empty() ? state.shape(1) : ptrs[0]->config().state_width;
  CheckRows("values", values.shape(0), values.shape(1), n, vb);
  CheckRows("state", state.shape(0), state.shape(1), n, sw);
  CheckRows("last_step", last_step.shape(0), 1, n, 1);
  CheckRows("freq", freq.shape(0), 1, n, 1);
  CheckRows("table", table.shape(0), 1, n, 1);
  const HostRowsIn in{keys.data(), values.data(), state.data(), last_step.data(), freq.data(),
                      static_cast<int64_t>(n)};
  std::vector<PutResult> r;
  {
    nb::gil_scoped_release release;
    r = PutPacked(ptrs, in, table.data(), threads);
  }
  std::vector<nb::tuple> out;
  for (const PutResult& p : r) {
    out.push_back(nb::make_tuple(p.applied, p.new_keys, p.bytes_before, p.bytes_after));
  }
  return out;
}

}  // namespace

void BindHostStore(nb::module_& m) {
  nb::class_<HostStore>(m, "HostStore")
      .def(
          "__init__",
          [](HostStore* self, int64_t value_bytes, int64_t state_width,
             int64_t memory_limit_bytes, int32_t partitions, int32_t threads,
             int64_t parallel_min_keys) {
            HostStoreConfig c;
            c.value_bytes = value_bytes;
            c.state_width = state_width;
            c.memory_limit_bytes = memory_limit_bytes;
            c.partitions = partitions;
            c.threads = threads;
            c.parallel_min_keys = parallel_min_keys;
            new (self) HostStore(c);
          },
          nb::arg("value_bytes"), nb::arg("state_width"), nb::arg("memory_limit_bytes"),
          nb::arg("partitions"), nb::arg("threads"), nb::arg("parallel_min_keys"))
      .def("put", &Put)
      .def("make_room",
           [](HostStore& s, int64_t rows) {
             PutResult r;
             {
               nb::gil_scoped_release release;
               r = s.MakeRoom(rows);
             }
             return nb::make_tuple(r.applied, r.bytes_before, r.bytes_after);
           })
      .def("take", [](HostStore& s, KeysIn k) { return Lookup(s, k, true); })
      .def("peek", [](HostStore& s, KeysIn k) { return Lookup(s, k, false); })
      .def("contains", &Contains)
      .def("erase", &Erase)
      .def("evict_older_than", &EvictOlderThan)
      .def("export", &Export)
      // These wait on the store's mutex: without the GIL, so a long call on
      // another thread does not stall the interpreter.
      .def("size", &HostStore::Size, nb::call_guard<nb::gil_scoped_release>())
      .def("bytes", &HostStore::Bytes, nb::call_guard<nb::gil_scoped_release>())
      .def("counters", &HostStore::Counters, nb::call_guard<nb::gil_scoped_release>())
      .def("set_memory_limit_bytes", &HostStore::set_memory_limit_bytes,
           nb::call_guard<nb::gil_scoped_release>())
      .def_prop_ro("memory_limit_bytes",
                   [](const HostStore& s) { return s.config().memory_limit_bytes; });
  nb::class_<HostStager>(m, "HostStager")
      .def(nb::init<int64_t, int64_t, int32_t, int32_t>(), nb::arg("value_bytes"),
           nb::arg("state_width"), nb::arg("num_shards"), nb::arg("threads"))
      .def("collect", &Collect)
      .def("pack", [](const HostStager& s, int64_t S) {
        return Pack(s, S, s.value_bytes(), s.state_width());
      })
      .def_prop_ro("looked_up", &HostStager::looked_up)
      .def_prop_ro("found", &HostStager::found);
  nb::dict names;
  for (int i = 0; i < kNumHostCounters; ++i) names[kHostCounterNames[i]] = i;
  m.def("put_packed", &PutPackedRows, nb::arg("stores"), nb::arg("keys"), nb::arg("values"),
        nb::arg("state"), nb::arg("last_step"), nb::arg("freq"), nb::arg("table"),
        nb::arg("threads"));
  m.attr("HOST_COUNTERS") = names;
}

}  // namespace hypereca
