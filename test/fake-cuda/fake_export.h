// Shared by the fake CUDA driver and the fake NVRTC: exporting each function of an X-macro table of
// native/cuda_api.h under the table's symbol name.
//
// The tables name the exported symbols as strings (cuMemAlloc is "cuMemAlloc_v2"), which no C++ identifier can be
// derived from, so each fake implements `fake_<member>` (extern "C", hidden) and KEOPS_FAKE_EXPORT declares an alias
// of it whose assembler name is the table's string. A missing implementation is a compile error, and so is one
// whose type differs from the table's: the fakes cannot drift from what the addon resolves.
#pragma once
#include <type_traits>

namespace keops_fake {
template <typename T>
using Identity = T;  // lets a function type (`int (int*)`) declare a function: Identity<int (int*)> f;
}  // namespace keops_fake

#define KEOPS_FAKE_EXPORT(member, symbol, type)                                                               \
  static_assert(std::is_same_v<decltype(fake_##member), type>,                                                \
                "fake_" #member " does not have the type cuda_api.h gives " #member);                         \
  extern "C" __attribute__((alias("fake_" #member), copy(fake_##member), visibility("default")))                \
  keops_fake::Identity<type> keops_fake_export_##member __asm__(symbol);
