// The CUDA device runtime's part of the addon's JS interface (see cuda_device_addon.cc).
#pragma once
#include <napi.h>

namespace keops {

// Adds cudaDeviceOpen/Init/Close, cudaModuleLoad, cudaUpload, cudaDownload, cudaFree, cudaMemoryInfo and cudaRun
// (with Sync variants) to `exports`. No per-environment state: every handle owns what it needs.
void RegisterCudaDeviceBindings(Napi::Env env, Napi::Object exports);

}  // namespace keops
