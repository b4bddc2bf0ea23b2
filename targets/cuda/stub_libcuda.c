/* A stand-in libcuda.so.1 for machines without an NVIDIA driver: it lets TVM's CUDA runtime
 * library load, so that `tvm.compile` embeds nvcc's cubin instead of CUDA source. Every entry
 * point reports CUDA_ERROR_NO_DEVICE (100); nothing runs on it. */
#define STUB(name) int name(void) { return 100; }
STUB(cuDeviceGetName)
STUB(cuFuncSetAttribute)
STUB(cuGetErrorName)
STUB(cuGetErrorString)
STUB(cuLaunchKernelEx)
STUB(cuModuleGetFunction)
STUB(cuModuleLoadData)
STUB(cuModuleUnload)
STUB(cuTensorMapEncodeTiled)
STUB(cuInit)
STUB(cuDriverGetVersion)
STUB(cuDeviceGetCount)
int squeeze_stub_libcuda = 1; /* marks this stand-in: the runtime reports "no driver" */
