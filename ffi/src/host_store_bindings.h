// Registers the host tier's store (class HostStore, dict HOST_COUNTERS) in a
// nanobind module; defined in host_store_bindings.cc.
#pragma once

#include <nanobind/nanobind.h>

namespace hypereca {

void BindHostStore(nanobind::module_& m);

}  // namespace hypereca
