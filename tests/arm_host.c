/* A minimal host for TVM-generated kernels, without the TVM runtime: runs a plan of kernel calls
 * (written by tests/arm_emu.py) from a cross-compiled library, e.g. under qemu-aarch64.
 *
 *   arm_host LIB.so PLAN.bin OUT.bin
 *
 * PLAN: "SQZP", u32 tensors, per tensor {u8 code, u8 bits, u16 0, u32 ndim, i64 shape[ndim],
 * u64 nbytes, u8 has_data, bytes}, u32 calls, per call {u32 len, name, u32 nargs, u32 ids},
 * u32 outputs, u32 ids. OUT: the outputs' bytes, in order. Parallel loops run serially, as
 * PARALLEL_TASKS tasks one after the other (each task computes its own share).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARALLEL_TASKS 3

typedef struct { int32_t device_type, device_id; } DLDevice;
typedef struct { uint8_t code, bits; uint16_t lanes; } DLDataType;
typedef struct {
  void *data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t *shape, *strides; uint64_t byte_offset;
} DLTensor;
typedef struct { int32_t type_index; uint32_t pad; union { int64_t v_int64; void *v_ptr; }; } TVMFFIAny;
typedef int (*SafeCall)(void *, const TVMFFIAny *, int32_t, TVMFFIAny *);
typedef struct { void *sync_handle; int32_t num_task; } ParallelEnv;
typedef int (*ParallelLambda)(int, ParallelEnv *, void *);
enum { kDLTensorPtr = 7 };

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t n) {
  fprintf(stderr, "kernel error %s:", kind);
  for (int i = 0; i < n; i++) fprintf(stderr, " %s", parts[i]);
  fprintf(stderr, "\n");
}
static void *alloc_workspace(int dev, int id, uint64_t n, int code, int bits) { return malloc(n ? n : 1); }
static int free_workspace(int dev, int id, void *p) { free(p); return 0; }
static int parallel_launch(ParallelLambda f, void *cdata, int num_task) {
  ParallelEnv env = {NULL, PARALLEL_TASKS};
  for (int t = 0; t < PARALLEL_TASKS; t++)
    if (f(t, &env, cdata)) return -1;
  return 0;
}

static FILE *plan;
static void take(void *p, size_t n) {
  if (fread(p, 1, n, plan) != n) { fprintf(stderr, "truncated plan\n"); exit(3); }
}
static uint32_t u32(void) { uint32_t v; take(&v, 4); return v; }

static void set_slot(void *lib, const char *name, void *fn) {
  void **slot = dlsym(lib, name);
  if (slot) *slot = fn;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: %s LIB.so PLAN.bin OUT.bin\n", argv[0]); return 2; }
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 3; }
  set_slot(lib, "__TVMBackendAllocWorkspace", (void *)alloc_workspace);
  set_slot(lib, "__TVMBackendFreeWorkspace", (void *)free_workspace);
  set_slot(lib, "__TVMBackendParallelLaunch", (void *)parallel_launch);
  if (!(plan = fopen(argv[2], "rb"))) { perror(argv[2]); return 3; }
  char magic[4];
  take(magic, 4);
  if (memcmp(magic, "SQZP", 4)) { fprintf(stderr, "not a plan\n"); return 3; }
  uint32_t nt = u32();
  DLTensor *t = calloc(nt, sizeof(DLTensor));
  uint64_t *nbytes = calloc(nt, sizeof(uint64_t));
  for (uint32_t i = 0; i < nt; i++) {
    uint8_t head[4];
    take(head, 4);
    t[i].dtype = (DLDataType){head[0], head[1], 1};
    t[i].device = (DLDevice){1, 0};
    t[i].ndim = (int32_t)u32();
    t[i].shape = calloc(t[i].ndim + 1, sizeof(int64_t));
    take(t[i].shape, sizeof(int64_t) * t[i].ndim);
    take(&nbytes[i], 8);
    t[i].data = aligned_alloc(64, (nbytes[i] + 64) / 64 * 64);
    uint8_t has_data;
    take(&has_data, 1);
    if (has_data) take(t[i].data, nbytes[i]);
    else memset(t[i].data, 0, nbytes[i]);
  }
  for (uint32_t c = 0, nc = u32(); c < nc; c++) {
    char name[1024] = "__tvm_ffi_";
    uint32_t len = u32();
    if (len > 1000) { fprintf(stderr, "bad name\n"); return 3; }
    take(name + strlen(name), len);
    uint32_t na = u32();
    TVMFFIAny *args = calloc(na, sizeof(TVMFFIAny)), ret = {0};
    for (uint32_t a = 0; a < na; a++) {
      args[a].type_index = kDLTensorPtr;
      args[a].v_ptr = &t[u32()];
    }
    SafeCall fn = (SafeCall)dlsym(lib, name);
    if (!fn) { fprintf(stderr, "no symbol %s\n", name); return 3; }
    if (fn(NULL, args, (int32_t)na, &ret)) { fprintf(stderr, "%s failed\n", name); return 4; }
    free(args);
  }
  FILE *out = fopen(argv[3], "wb");
  if (!out) { perror(argv[3]); return 3; }
  for (uint32_t o = 0, no = u32(); o < no; o++) {
    uint32_t id = u32();
    fwrite(t[id].data, 1, nbytes[id], out);
  }
  return fclose(out) ? 3 : 0;
}
