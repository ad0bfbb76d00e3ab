// What a typed array really holds, read from its backing store with napi_get_typedarray_info: never from the
// JS-visible `length` / `buffer` properties, which a subclass or an own property can fake. Works for arrays on
// a SharedArrayBuffer (whose Napi::ArrayBuffer view refuses them) and on resizable buffers (the current length).
#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "coded_failure.h"

namespace keops {

struct TypedArrayView {
  void* data;  // first element; null when there are none
  size_t elements;
  size_t bytes;
  napi_typedarray_type type;
};

inline size_t ElementBytes(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    default:
      return 8;
  }
}

// Throws ERR_INVALID_ARGUMENT for a non-typed-array and ERR_ARG_DETACHED for an array whose buffer was
// detached (transferred to another thread, or structuredClone'd with a transfer list).
inline TypedArrayView ViewTypedArray(const Napi::Value& value, const std::string& what) {
  Require(value.IsTypedArray(), what + " must be a typed array");
  napi_env env = value.Env();
  TypedArrayView view{nullptr, 0, 0, napi_uint8_array};
  napi_value buffer = nullptr;
  size_t byte_offset = 0;
  NAPI_THROW_IF_FAILED(env,
                       napi_get_typedarray_info(env, value, &view.type, &view.elements, &view.data, &buffer,
                                                &byte_offset),
                       view);
  bool detached = false;
  // A SharedArrayBuffer cannot be detached (the call answers false for it).
  NAPI_THROW_IF_FAILED(env, napi_is_detached_arraybuffer(env, buffer, &detached), view);
  if (detached) {
    throw CodedFailure("ERR_ARG_DETACHED",
                       what + ": its ArrayBuffer is detached (transferred to another thread or context)");
  }
  view.bytes = view.elements * ElementBytes(view.type);
  if (view.elements == 0) view.data = nullptr;
  return view;
}

}  // namespace keops
