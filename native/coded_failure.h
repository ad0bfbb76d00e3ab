// Failures that cross into JS as an Error with a string `code` (and, for compilations, a `log`), and the guard
// that keeps every C++ exception from escaping into Node. Shared by the CUDA bindings.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace keops {

class CodedFailure : public std::runtime_error {
 public:
  CodedFailure(std::string code, const std::string& message, std::string log = "")
      : std::runtime_error(message), code_(std::move(code)), log_(std::move(log)) {}
  const std::string& code() const { return code_; }
  const std::string& log() const { return log_; }

 private:
  std::string code_;
  std::string log_;
};

inline Napi::Error MakeCodedError(Napi::Env env, const CodedFailure& failure) {
  Napi::Error error = Napi::Error::New(env, failure.what());
  error.Set("code", Napi::String::New(env, failure.code()));
  if (!failure.log().empty()) error.Set("log", Napi::String::New(env, failure.log()));
  return error;
}

// Runs `body`; any C++ exception becomes a pending JS exception with a code.
template <typename Body>
Napi::Value Guarded(Napi::Env env, Body&& body) {
  try {
    return body();
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();
  } catch (const CodedFailure& e) {
    MakeCodedError(env, e).ThrowAsJavaScriptException();
  } catch (const std::exception& e) {
    MakeCodedError(env, CodedFailure("ERR_NATIVE", e.what())).ThrowAsJavaScriptException();
  } catch (...) {
    MakeCodedError(env, CodedFailure("ERR_NATIVE", "unknown native failure")).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

inline void Require(bool condition, const std::string& message) {
  if (!condition) throw CodedFailure("ERR_INVALID_ARGUMENT", message);
}

}  // namespace keops
