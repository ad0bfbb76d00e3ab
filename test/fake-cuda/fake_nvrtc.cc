// A fake NVRTC (libnvrtc.so.13) for testing the addon's CUDA path on machines without a GPU or a CUDA toolkit: it
// exports every NVRTC function native/cuda_api.h lists, with NVRTC 13.0's signatures and result codes, and
// "compiles" a CUDA program by building it with g++ for the CPU, with the CUDA built-ins of emulation.h. The fake
// driver (fake_cuda_driver.cc) loads and runs the result. Built by test/fake-cuda.ts.
//
// What is imitated, because the addon depends on it:
//   - the version (13.0) and the supported architectures (75 80 86 87 89 90 100 120);
//   - the options native/nvrtc_compile.cc passes (--gpu-architecture=..., --std=..., --use_fast_math) and the way
//     an unknown architecture is rejected: NVRTC_ERROR_INVALID_OPTION with the log
//     "nvrtc: error: invalid value for --gpu-architecture (-arch)", which makes the addon retry for an older one;
//   - a rejected source: NVRTC_ERROR_COMPILATION, the compiler's messages as the program log, naming the program
//     (a #line directive makes g++ report "<program name>:<line>:...");
//   - PTX and CUBIN retrieval: nvrtcGetPTXSize counts the terminating NUL nvrtcGetPTX writes; a virtual (compute_XX)
//     or absent architecture has no CUBIN (size 0), as in NVRTC.
// The image ("PTX" and "CUBIN" alike) is binary and self-describing, because cuModuleLoadDataEx receives a bare
// pointer: the 8 bytes "KEOPSEMU", the size of what follows as a little-endian uint64, then a shared object. The
// shared object exports, for every `extern "C" __global__ void NAME(` of the source, a trampoline
//   extern "C" int keops_emu_entry_NAME(const unsigned grid[3], const unsigned block[3], unsigned shared_bytes,
//                                       void** params)
// that unpacks cuLaunchKernel's parameter array into the kernel's parameter types and runs the grid
// (keops_emu::launch in emulation.h); it returns a keops_emu::Status.
//
// Environment: KEOPS_FAKE_NVRTC_CXX, the C++ compiler to run (default g++, looked up in PATH); TMPDIR, where the
// private build folder of each compilation goes (removed afterwards). emulation.h is read from the folder this
// library is in (test/fake-cuda.ts copies it there).
#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <new>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda_api.h"
#include "fake_export.h"

extern char** environ;

using keops::nvrtcProgram;
using keops::nvrtcResult;

namespace {

constexpr nvrtcResult kSuccess = 0;
constexpr nvrtcResult kOutOfMemory = 1;
constexpr nvrtcResult kInvalidInput = 3;
constexpr nvrtcResult kInvalidProgram = 4;
constexpr nvrtcResult kInvalidOption = 5;
constexpr nvrtcResult kCompilation = 6;
constexpr nvrtcResult kInternalError = 11;

constexpr int kSupportedArchs[] = {75, 80, 86, 87, 89, 90, 100, 120};

}  // namespace

// The program object behind an nvrtcProgram handle (the handle type is keops::_nvrtcProgram*).
struct keops::_nvrtcProgram {
  std::string source;
  std::string name;
  std::vector<std::pair<std::string, std::string>> headers;  // include name, contents
  bool compiled = false;
  bool has_cubin = false;  // compiled for a real architecture (sm_XX)
  std::vector<char> image;
  std::string log;
};

namespace {

// Live programs, so that a destroyed or made-up handle is reported (NVRTC_ERROR_INVALID_PROGRAM) instead of being
// dereferenced. Programs are used by one thread at a time (as NVRTC requires); only this table is shared.
std::mutex g_mutex;
std::set<nvrtcProgram>& Programs() {
  static auto* programs = new std::set<nvrtcProgram>();  // never destroyed: calls may come during exit
  return *programs;
}

bool IsLive(nvrtcProgram program) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return program != nullptr && Programs().count(program) != 0;
}

// ---- options ----------------------------------------------------------------------------------------------------

struct Options {
  std::string arch;               // as given ("sm_90"), empty for NVRTC's default (compute_75)
  std::string std = "c++17";      // the C++ dialect for g++; the emulation header needs C++17
  std::vector<std::string> gxx;   // -D, -U, -I, -include options passed on to g++
};

bool StartsWith(const std::string& text, const char* prefix) { return text.compare(0, strlen(prefix), prefix) == 0; }

// "sm_90", "compute_90", "sm_90a", "compute_100f"... with a number in kSupportedArchs (the a/f variants from 90).
bool SupportedArch(const std::string& arch) {
  size_t i = StartsWith(arch, "sm_") ? 3 : StartsWith(arch, "compute_") ? 8 : 0;
  if (i == 0) return false;
  int number = 0;
  const size_t digits = i;
  for (; i < arch.size() && std::isdigit(static_cast<unsigned char>(arch[i])) != 0 && i - digits < 4; i++) {
    number = 10 * number + (arch[i] - '0');
  }
  if (i == digits) return false;
  const std::string suffix = arch.substr(i);
  if (suffix != "" && suffix != "a" && suffix != "f") return false;
  for (int supported : kSupportedArchs) {
    if (supported == number) return suffix.empty() || number >= 90;
  }
  return false;
}

// Reads the options the way NVRTC does, for the ones it knows; others are NVRTC_ERROR_INVALID_OPTION with a log.
nvrtcResult ParseOptions(int count, const char* const* options, Options* out, std::string* log) {
  // Accepted, no effect on the CPU build.
  static const char* const kFlags[] = {"--use_fast_math", "-use_fast_math", "--device-debug", "-G",
                                       "--generate-line-info", "-lineinfo", "--disable-warnings", "-w",
                                       "--restrict", "-restrict", "--device-as-default-execution-space",
                                       "-default-device", "--extra-device-vectorization",
                                       "-extra-device-vectorization", "--extensible-whole-program", "-ewp",
                                       "--dlink-time-opt", "-dlto", "--display-error-number", "-err-no",
                                       "--no-display-error-number", "-no-err-no", "--no-source-include",
                                       "-no-source-include"};
  static const char* const kValued[] = {"--maxrregcount=", "-maxrregcount=", "--ftz=", "-ftz=", "--prec-sqrt=",
                                        "-prec-sqrt=", "--prec-div=", "-prec-div=", "--fmad=", "-fmad=",
                                        "--relocatable-device-code=", "-rdc=", "--dopt=", "-dopt=",
                                        "--optimization-info=", "-opt-info=", "--diag-suppress=", "-diag-suppress=",
                                        "--diag-error=", "-diag-error=", "--diag-warn=", "-diag-warn=", "--time=",
                                        "-time=", "--split-compile=", "-split-compile=", "--ptxas-options=",
                                        "-Xptxas="};
  for (int k = 0; k < count; k++) {
    if (options[k] == nullptr) return kInvalidInput;
    const std::string option = options[k];
    std::string arch;
    bool is_arch = false;
    if (StartsWith(option, "--gpu-architecture=") || StartsWith(option, "-arch=")) {
      arch = option.substr(option.find('=') + 1);
      is_arch = true;
    } else if (option == "--gpu-architecture" || option == "-arch") {
      if (k + 1 < count && options[k + 1] != nullptr) arch = options[++k];
      is_arch = true;
    }
    if (is_arch) {
      if (!SupportedArch(arch)) {
        // NVRTC's own words; native/nvrtc_compile.cc retries on the result code and quotes this log.
        *log = "nvrtc: error: invalid value for --gpu-architecture (-arch)\n";
        return kInvalidOption;
      }
      out->arch = arch;
      continue;
    }
    if (StartsWith(option, "--std=") || StartsWith(option, "-std=")) {
      const std::string value = option.substr(option.find('=') + 1);
      if (value != "c++03" && value != "c++11" && value != "c++14" && value != "c++17" && value != "c++20") {
        *log = "nvrtc: error: invalid value for --std (-std)\n";
        return kInvalidOption;
      }
      out->std = value == "c++20" ? "c++20" : "c++17";
      continue;
    }
    bool known = false;
    for (const char* flag : kFlags) known = known || option == flag;
    for (const char* prefix : kValued) known = known || StartsWith(option, prefix);
    if (known) continue;
    // Preprocessor options go to g++.
    struct Passed {
      const char* nvrtc;
      const char* gxx;
    };
    static const Passed kPassed[] = {{"--define-macro=", "-D"}, {"--undefine-macro=", "-U"},
                                     {"--include-path=", "-I"}, {"--pre-include=", "-include"},
                                     {"-include=", "-include"}, {"-D", "-D"},
                                     {"-U", "-U"},              {"-I", "-I"}};
    for (const Passed& passed : kPassed) {
      if (!known && StartsWith(option, passed.nvrtc) && option.size() > strlen(passed.nvrtc)) {
        out->gxx.push_back(passed.gxx);
        out->gxx.push_back(option.substr(strlen(passed.nvrtc)));
        known = true;
      }
    }
    if (!known) {
      // The fake's wording: NVRTC's differs between versions.
      *log = "nvrtc: error: unrecognized option " + option + "\n";
      return kInvalidOption;
    }
  }
  return kSuccess;
}

// ---- kernels and trampolines ------------------------------------------------------------------------------------

struct Kernel {
  std::string name;
  std::string scope;  // "::a::b" (namespaces around the definition), "" at global scope
};

// Whether `extern "C" __global__ void [__launch_bounds__(...)] NAME (` starts at s[i]; sets *name.
bool KernelHead(const std::string& s, size_t i, std::string* name) {
  auto spaces = [&](bool required) {
    const size_t start = i;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])) != 0) i++;
    return !required || i > start;
  };
  auto token = [&](const char* text) {
    if (s.compare(i, strlen(text), text) != 0) return false;
    i += strlen(text);
    return true;
  };
  auto identifier = [&]() {
    const size_t start = i;
    if (i < s.size() && (std::isalpha(static_cast<unsigned char>(s[i])) != 0 || s[i] == '_')) i++;
    while (i > start && i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) != 0 || s[i] == '_')) i++;
    return s.substr(start, i - start);
  };
  if (!(token("extern") && spaces(true) && token("\"C\"") && spaces(true) && token("__global__") && spaces(true) &&
        token("void") && spaces(true))) {
    return false;
  }
  if (token("__launch_bounds__")) {
    spaces(false);
    if (!token("(")) return false;
    const size_t close = s.find(')', i);
    if (close == std::string::npos) return false;
    i = close + 1;
    spaces(false);
  }
  *name = identifier();
  spaces(false);
  return !name->empty() && token("(");
}

// Finds the `extern "C" __global__ void NAME(` of the source and the namespaces around each, with a light scanner:
// comments, string and character literals and preprocessor lines are skipped; every brace is matched, and those
// opened by `namespace X {` name a scope. Raw string literals are not understood (the generated code has none).
std::vector<Kernel> FindKernels(const std::string& s) {
  struct Scope {
    bool is_namespace;
    std::string name;  // "" for an anonymous namespace
  };
  std::vector<Kernel> kernels;
  std::set<std::string> seen;
  std::vector<Scope> scopes;
  bool namespace_pending = false;  // after `namespace [name]`, before its `{`
  std::string pending_name;
  bool line_start = true;
  const size_t n = s.size();
  size_t i = 0;
  auto is_ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; };
  while (i < n) {
    const char c = s[i];
    if (c == '\n') {
      line_start = true;
      i++;
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      i++;
      continue;
    }
    if (line_start && c == '#') {  // a directive, with its backslash continuations
      while (i < n && s[i] != '\n') i += (s[i] == '\\' && i + 1 < n) ? 2 : 1;
      continue;
    }
    line_start = false;
    if (c == '/' && i + 1 < n && s[i + 1] == '/') {
      while (i < n && s[i] != '\n') i++;
      continue;
    }
    if (c == '/' && i + 1 < n && s[i + 1] == '*') {
      const size_t end = s.find("*/", i + 2);
      i = end == std::string::npos ? n : end + 2;
      continue;
    }
    if (c == '"' || (c == '\'' && !(i > 0 && is_ident(s[i - 1])))) {  // a quote after a digit separates digits
      for (i++; i < n && s[i] != c && s[i] != '\n'; i++) {
        if (s[i] == '\\') i++;
      }
      i++;
      continue;
    }
    if (c == '{') {
      scopes.push_back({namespace_pending, pending_name});
      namespace_pending = false;
      i++;
      continue;
    }
    if (c == '}') {
      if (!scopes.empty()) scopes.pop_back();
      i++;
      continue;
    }
    if (c == ';' || c == '=') {  // `namespace a = b;` is an alias, not a scope
      namespace_pending = false;
      i++;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) != 0 || c == '_') {
      const size_t start = i;
      while (i < n && is_ident(s[i])) i++;
      const std::string word = s.substr(start, i - start);
      if (word == "namespace") {
        size_t j = i;
        while (j < n && std::isspace(static_cast<unsigned char>(s[j])) != 0) j++;
        size_t end = j;
        while (end < n && (is_ident(s[end]) || s[end] == ':')) end++;
        namespace_pending = true;
        pending_name = s.substr(j, end - j);  // "a::b" for a nested namespace definition
        i = end;
      } else if (word == "extern") {
        std::string name;
        if (KernelHead(s, start, &name) && seen.insert(name).second) {
          std::string scope;
          for (const Scope& open : scopes) {
            if (open.is_namespace && !open.name.empty()) scope += "::" + open.name;
          }
          kernels.push_back({name, scope});
        }
      }
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) != 0) {  // a number, with its suffixes and digit separators
      while (i < n && (is_ident(s[i]) || s[i] == '.' || s[i] == '\'')) i++;
      continue;
    }
    i++;
  }
  return kernels;
}

std::string Trampolines(const std::vector<Kernel>& kernels) {
  std::string out;
  for (const Kernel& kernel : kernels) {
    out += "extern \"C\" __attribute__((visibility(\"default\"))) int keops_emu_entry_" + kernel.name +
           "(const unsigned grid[3], const unsigned block[3], unsigned shared_bytes, void** params) {\n"
           "  return keops_emu::launch(&" +
           kernel.scope + "::" + kernel.name + ", grid, block, shared_bytes, params);\n}\n";
  }
  return out;
}

// A string literal for a #line directive.
std::string Quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c != '\n') out += c;
  }
  return out + "\"";
}

// ---- running g++ ------------------------------------------------------------------------------------------------

// The folder this library was loaded from (with its trailing slash), where emulation.h is.
std::string OwnFolder() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&OwnFolder), &info) == 0 || info.dli_fname == nullptr) return "./";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string("./") : path.substr(0, slash + 1);
}

bool WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary);
  file.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  file.close();
  return !file.fail();
}

bool ReadFile(const std::string& path, std::string* contents) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return false;
  contents->assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  return !file.bad();
}

// A header given to nvrtcCreateProgram, written under `root` so that #include finds it; names that would leave
// the folder (absolute, or with a ".." component) are refused.
bool WriteHeader(const std::string& root, const std::string& name, const std::string& contents) {
  if (name.empty() || name[0] == '/' || name == ".." || StartsWith(name, "../") ||
      name.find("/../") != std::string::npos || (name.size() >= 3 && name.compare(name.size() - 3, 3, "/..") == 0)) {
    return false;
  }
  for (size_t slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1)) {
    const std::string folder = root + "/" + name.substr(0, slash);
    if (mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) return false;
  }
  return WriteFile(root + "/" + name, contents);
}

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) { return remove(path); }

// Removes the build folder on every way out of a compilation.
class TempFolder {
 public:
  TempFolder() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp") + "/keops-fake-nvrtc-XXXXXX";
    if (mkdtemp(&pattern[0]) != nullptr) path_ = pattern;
  }
  ~TempFolder() {
    if (!path_.empty()) nftw(path_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs the compiler with stdout and stderr into `output_file`; posix_spawn rather than fork because the host is
// a multithreaded Node process. Returns false (with *why) when it could not run at all; *exit_status is the
// compiler's wait status otherwise.
bool RunCompiler(const std::vector<std::string>& args, const std::string& output_file, int* exit_status,
                 std::string* why) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    *why = "cannot run " + args[0] + ": " + strerror(spawned);
    return false;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      *why = std::string("waitpid failed: ") + strerror(errno);
      return false;
    }
  }
  *exit_status = status;
  return true;
}

void AppendLittleEndian64(std::vector<char>* out, uint64_t value) {
  for (int k = 0; k < 8; k++) out->push_back(static_cast<char>((value >> (8 * k)) & 0xff));
}

nvrtcResult Compile(keops::_nvrtcProgram* program, const Options& options) {
  TempFolder folder;
  if (folder.path().empty()) {
    program->log = std::string("keops fake NVRTC: cannot create a build folder: ") + strerror(errno) + "\n";
    return kInternalError;
  }
  const std::string include = folder.path() + "/include";
  if (mkdir(include.c_str(), 0700) != 0) {
    program->log = std::string("keops fake NVRTC: cannot create a build folder: ") + strerror(errno) + "\n";
    return kInternalError;
  }
  for (const auto& header : program->headers) {
    if (!WriteHeader(include, header.first, header.second)) {
      program->log = "keops fake NVRTC: cannot write the header " + header.first + "\n";
      return kInternalError;
    }
  }
  const std::string unit = "#include \"emulation.h\"\n#line 1 " + Quoted(program->name) + "\n" + program->source +
                           "\n#line 1 \"<keops fake NVRTC trampolines>\"\n" +
                           Trampolines(FindKernels(program->source));
  const std::string source_path = folder.path() + "/program.cc";
  const std::string object_path = folder.path() + "/program.so";
  const std::string log_path = folder.path() + "/log.txt";
  if (!WriteFile(source_path, unit)) {
    program->log = "keops fake NVRTC: cannot write " + source_path + "\n";
    return kInternalError;
  }
  const char* cxx = std::getenv("KEOPS_FAKE_NVRTC_CXX");
  std::vector<std::string> args = {cxx != nullptr && cxx[0] != '\0' ? cxx : "g++",
                                   "-std=" + options.std,
                                   "-O1",
                                   "-shared",
                                   "-fPIC",
                                   "-pthread",
                                   "-w",
                                   "-fvisibility=hidden",  // only the trampolines are exported
                                   "-I",
                                   OwnFolder(),
                                   "-I",
                                   include};
  args.insert(args.end(), options.gxx.begin(), options.gxx.end());
  args.insert(args.end(), {"-o", object_path, source_path});
  int status = 0;
  std::string why;
  if (!RunCompiler(args, log_path, &status, &why)) {
    program->log = "keops fake NVRTC: " + why + "\n";
    return kInternalError;
  }
  std::string output;
  ReadFile(log_path, &output);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    program->log = output.empty() ? args[0] + " failed without a message\n" : output;
    return kCompilation;
  }
  std::string object;
  if (!ReadFile(object_path, &object) || object.empty()) {
    program->log = "keops fake NVRTC: cannot read the compiled " + object_path + "\n";
    return kInternalError;
  }
  program->image.clear();
  program->image.reserve(16 + object.size());
  program->image.insert(program->image.end(), {'K', 'E', 'O', 'P', 'S', 'E', 'M', 'U'});
  AppendLittleEndian64(&program->image, object.size());
  program->image.insert(program->image.end(), object.begin(), object.end());
  program->log = output;  // empty with -w, as NVRTC's log of a clean compilation
  program->compiled = true;
  program->has_cubin = StartsWith(options.arch, "sm_");
  return kSuccess;
}

}  // namespace

// ---- the NVRTC API ----------------------------------------------------------------------------------------------

extern "C" {

__attribute__((visibility("hidden"))) const char* fake_nvrtcGetErrorString(nvrtcResult result) {
  static const char* const kNames[] = {"NVRTC_SUCCESS",
                                       "NVRTC_ERROR_OUT_OF_MEMORY",
                                       "NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
                                       "NVRTC_ERROR_INVALID_INPUT",
                                       "NVRTC_ERROR_INVALID_PROGRAM",
                                       "NVRTC_ERROR_INVALID_OPTION",
                                       "NVRTC_ERROR_COMPILATION",
                                       "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
                                       "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION",
                                       "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION",
                                       "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID",
                                       "NVRTC_ERROR_INTERNAL_ERROR",
                                       "NVRTC_ERROR_TIME_FILE_WRITE_FAILED",
                                       "NVRTC_ERROR_NO_PCH_CREATE_ATTEMPTED",
                                       "NVRTC_ERROR_PCH_CREATE_HEAP_EXHAUSTED",
                                       "NVRTC_ERROR_PCH_CREATE",
                                       "NVRTC_ERROR_CANCELLED",
                                       "NVRTC_ERROR_TIME_TRACE_FILE_WRITE_FAILED"};
  const int count = static_cast<int>(sizeof kNames / sizeof kNames[0]);
  return result >= 0 && result < count ? kNames[result] : "NVRTC_ERROR unknown";
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcVersion(int* major, int* minor) {
  if (major == nullptr || minor == nullptr) return kInvalidInput;
  *major = 13;
  *minor = 0;
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetNumSupportedArchs(int* count) {
  if (count == nullptr) return kInvalidInput;
  *count = static_cast<int>(sizeof kSupportedArchs / sizeof kSupportedArchs[0]);
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetSupportedArchs(int* archs) {
  if (archs == nullptr) return kInvalidInput;
  for (int arch : kSupportedArchs) *archs++ = arch;
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcCreateProgram(nvrtcProgram* out, const char* source,
                                                                          const char* name, int header_count,
                                                                          const char* const* headers,
                                                                          const char* const* include_names) {
  if (out == nullptr || source == nullptr || header_count < 0 ||
      (header_count > 0 && (headers == nullptr || include_names == nullptr))) {
    return kInvalidInput;
  }
  try {
    auto* program = new keops::_nvrtcProgram();
    program->source = source;
    program->name = name != nullptr ? name : "default_program";  // NVRTC's name for an unnamed program
    for (int k = 0; k < header_count; k++) {
      if (headers[k] == nullptr || include_names[k] == nullptr) {
        delete program;
        return kInvalidInput;
      }
      program->headers.emplace_back(include_names[k], headers[k]);
    }
    std::lock_guard<std::mutex> lock(g_mutex);
    Programs().insert(program);
    *out = program;
    return kSuccess;
  } catch (const std::bad_alloc&) {
    return kOutOfMemory;
  }
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcDestroyProgram(nvrtcProgram* program) {
  if (program == nullptr) return kInvalidInput;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (Programs().erase(*program) == 0) return kInvalidProgram;
  }
  delete *program;
  *program = nullptr;
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcCompileProgram(nvrtcProgram program, int count,
                                                                           const char* const* options) {
  if (!IsLive(program)) return kInvalidProgram;
  if (count < 0 || (count > 0 && options == nullptr)) return kInvalidInput;
  try {
    program->compiled = false;
    program->has_cubin = false;
    program->image.clear();
    program->log.clear();
    Options parsed;
    const nvrtcResult status = ParseOptions(count, options, &parsed, &program->log);
    if (status != kSuccess) return status;
    return Compile(program, parsed);
  } catch (const std::bad_alloc&) {
    return kOutOfMemory;
  } catch (const std::exception& e) {
    program->log = std::string("keops fake NVRTC: ") + e.what() + "\n";
    return kInternalError;
  }
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetPTXSize(nvrtcProgram program, size_t* size) {
  if (!IsLive(program)) return kInvalidProgram;
  if (size == nullptr) return kInvalidInput;
  if (!program->compiled) return kInvalidProgram;
  *size = program->image.size() + 1;  // NVRTC counts the terminating NUL of the PTX text
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetPTX(nvrtcProgram program, char* ptx) {
  if (!IsLive(program)) return kInvalidProgram;
  if (ptx == nullptr) return kInvalidInput;
  if (!program->compiled) return kInvalidProgram;
  if (!program->image.empty()) memcpy(ptx, program->image.data(), program->image.size());
  ptx[program->image.size()] = '\0';
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetCUBINSize(nvrtcProgram program, size_t* size) {
  if (!IsLive(program)) return kInvalidProgram;
  if (size == nullptr) return kInvalidInput;
  if (!program->compiled) return kInvalidProgram;
  *size = program->has_cubin ? program->image.size() : 0;  // 0 after a virtual architecture, as NVRTC
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetCUBIN(nvrtcProgram program, char* cubin) {
  if (!IsLive(program)) return kInvalidProgram;
  if (cubin == nullptr) return kInvalidInput;
  if (!program->compiled) return kInvalidProgram;
  if (program->has_cubin && !program->image.empty()) memcpy(cubin, program->image.data(), program->image.size());
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetProgramLogSize(nvrtcProgram program, size_t* size) {
  if (!IsLive(program)) return kInvalidProgram;
  if (size == nullptr) return kInvalidInput;
  *size = program->log.size() + 1;
  return kSuccess;
}

__attribute__((visibility("hidden"))) nvrtcResult fake_nvrtcGetProgramLog(nvrtcProgram program, char* log) {
  if (!IsLive(program)) return kInvalidProgram;
  if (log == nullptr) return kInvalidInput;
  memcpy(log, program->log.c_str(), program->log.size() + 1);
  return kSuccess;
}

}  // extern "C"

namespace keops {
KEOPS_NVRTC_REQUIRED_FUNCTIONS(KEOPS_FAKE_EXPORT)
KEOPS_NVRTC_OPTIONAL_FUNCTIONS(KEOPS_FAKE_EXPORT)
}  // namespace keops
