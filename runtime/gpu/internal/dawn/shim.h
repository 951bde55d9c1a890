// The C side of the Dawn implementation: Dawn's library is opened with
// dlopen() and every webgpu.h function is called through a pointer from
// dlsym(), so the binary needs no Dawn at build or link time. Callbacks of
// futures write into C memory (no Go pointer is handed to C); device loss
// and uncaptured errors go to Go through a token.
#ifndef WGLLM_DAWN_SHIM_H
#define WGLLM_DAWN_SHIM_H
#define WGPU_SKIP_DECLARATIONS
#include <stdint.h>
#include <stdlib.h>
#include "include/webgpu.h"

#define WGLLM_DAWN_FUNCS(X) \
	X(CreateInstance) X(InstanceRequestAdapter) X(InstanceWaitAny) X(InstanceRelease) \
	X(InstanceHasWGSLLanguageFeature) \
	X(AdapterGetInfo) X(AdapterInfoFreeMembers) X(AdapterGetLimits) X(AdapterHasFeature) \
	X(AdapterRequestDevice) X(AdapterRelease) \
	X(DeviceGetLimits) X(DeviceGetQueue) X(DeviceCreateBuffer) X(DeviceCreateShaderModule) \
	X(DeviceCreateBindGroupLayout) X(DeviceCreatePipelineLayout) X(DeviceCreateComputePipeline) \
	X(DeviceCreateBindGroup) X(DeviceCreateCommandEncoder) X(DeviceCreateQuerySet) \
	X(DevicePushErrorScope) X(DevicePopErrorScope) X(DeviceDestroy) X(DeviceRelease) X(DeviceTick) \
	X(QueueSubmit) X(QueueWriteBuffer) X(QueueOnSubmittedWorkDone) X(QueueRelease) \
	X(BufferMapAsync) X(BufferGetConstMappedRange) X(BufferUnmap) X(BufferDestroy) X(BufferRelease) \
	X(ShaderModuleRelease) X(BindGroupLayoutRelease) X(PipelineLayoutRelease) \
	X(ComputePipelineRelease) X(BindGroupRelease) X(QuerySetDestroy) X(QuerySetRelease) \
	X(CommandEncoderBeginComputePass) X(CommandEncoderCopyBufferToBuffer) \
	X(CommandEncoderResolveQuerySet) X(CommandEncoderFinish) X(CommandEncoderRelease) \
	X(CommandBufferRelease) \
	X(ComputePassEncoderSetPipeline) X(ComputePassEncoderSetBindGroup) \
	X(ComputePassEncoderDispatchWorkgroups) X(ComputePassEncoderEnd) X(ComputePassEncoderRelease)

typedef struct {
#define WGLLM_DAWN_FIELD(n) WGPUProc##n n;
	WGLLM_DAWN_FUNCS(WGLLM_DAWN_FIELD)
#undef WGLLM_DAWN_FIELD
} wgllm_dawn_procs;

extern wgllm_dawn_procs wgllm_dawn;

// wgllm_dawn_open loads the library and every function; NULL on success,
// else a message (static or dlerror's).
const char *wgllm_dawn_open(const char *path);

// A future's outcome, written by its callback: done turns 1 last.
typedef struct {
	int32_t done;
	int32_t status;
	int32_t type;  // error scopes: the WGPUErrorType
	char *message; // malloc'd copy, or NULL
	void *object;  // adapter or device requests
} wgllm_result;

wgllm_result *wgllm_result_new(void);
void wgllm_result_free(wgllm_result *r);

// wgllm_wait waits up to timeout_ns for a future; WGPUWaitStatus.
int wgllm_wait(WGPUInstance inst, WGPUFuture f, uint64_t timeout_ns);

WGPUInstance wgllm_create_instance(void);
WGPUFuture wgllm_request_adapter(WGPUInstance inst, WGPUBackendType backend, int fallback, wgllm_result *r);

typedef struct {
	uint64_t max_binding, max_buffer;
	uint32_t wg_storage, invocations, wg_x, wg_y, storage_buffers;
	int f16, subgroups, timestamps;
} wgllm_device_req;

WGPUFuture wgllm_request_device(WGPUAdapter a, wgllm_device_req r, uintptr_t token, wgllm_result *res);

WGPUFuture wgllm_pop_error_scope(WGPUDevice d, wgllm_result *r);
WGPUFuture wgllm_map_read(WGPUBuffer b, size_t off, size_t size, wgllm_result *r);
WGPUFuture wgllm_work_done(WGPUQueue q, wgllm_result *r);

WGPUBuffer wgllm_create_buffer(WGPUDevice d, const char *label, uint64_t size, uint64_t usage);
WGPUComputePipeline wgllm_create_pipeline(WGPUDevice d, const char *label, const char *code, size_t code_len,
	const char *entry, int n_storage, const int *read_write, WGPUBindGroupLayout *bgl_out,
	WGPUPipelineLayout *layout_out, WGPUShaderModule *module_out);
WGPUBindGroup wgllm_create_bind_group(WGPUDevice d, WGPUBindGroupLayout bgl, WGPUBuffer uniform, uint64_t uniform_size,
	int n, const WGPUBuffer *bufs, const uint64_t *offsets, const uint64_t *sizes);
WGPUQuerySet wgllm_create_timestamps(WGPUDevice d, uint32_t count);
WGPUComputePassEncoder wgllm_begin_pass(WGPUCommandEncoder e, WGPUQuerySet qs, uint32_t index);
void wgllm_dispatch(WGPUComputePassEncoder p, WGPUComputePipeline pipe, WGPUBindGroup bg, uint32_t off,
	uint32_t x, uint32_t y, uint32_t z);
WGPUCommandEncoder wgllm_create_encoder(WGPUDevice d);
WGPUCommandBuffer wgllm_finish(WGPUCommandEncoder e);

// Adapter facts read in one call.
typedef struct {
	char name[256], vendor[256], driver[256];
	int backend, type;
	uint32_t sg_min, sg_max;
	int f16, subgroups, timestamps, sgmatrix, dot4i8;
	WGPULimits limits;
} wgllm_adapter_info;

void wgllm_adapter_info_get(WGPUInstance inst, WGPUAdapter a, wgllm_adapter_info *out);
// Go cannot call C function pointers; these call the loaded ones.
static inline void wgllm_AdapterRelease(WGPUAdapter adapter) { wgllm_dawn.AdapterRelease(adapter); }
static inline void wgllm_BindGroupLayoutRelease(WGPUBindGroupLayout bindGroupLayout) { wgllm_dawn.BindGroupLayoutRelease(bindGroupLayout); }
static inline void wgllm_BindGroupRelease(WGPUBindGroup bindGroup) { wgllm_dawn.BindGroupRelease(bindGroup); }
static inline void wgllm_BufferDestroy(WGPUBuffer buffer) { wgllm_dawn.BufferDestroy(buffer); }
static inline void const * wgllm_BufferGetConstMappedRange(WGPUBuffer buffer, size_t offset, size_t size) { return wgllm_dawn.BufferGetConstMappedRange(buffer, offset, size); }
static inline void wgllm_BufferRelease(WGPUBuffer buffer) { wgllm_dawn.BufferRelease(buffer); }
static inline void wgllm_BufferUnmap(WGPUBuffer buffer) { wgllm_dawn.BufferUnmap(buffer); }
static inline void wgllm_CommandBufferRelease(WGPUCommandBuffer commandBuffer) { wgllm_dawn.CommandBufferRelease(commandBuffer); }
static inline void wgllm_CommandEncoderCopyBufferToBuffer(WGPUCommandEncoder commandEncoder, WGPUBuffer source, uint64_t sourceOffset, WGPUBuffer destination, uint64_t destinationOffset, uint64_t size) { wgllm_dawn.CommandEncoderCopyBufferToBuffer(commandEncoder, source, sourceOffset, destination, destinationOffset, size); }
static inline void wgllm_CommandEncoderRelease(WGPUCommandEncoder commandEncoder) { wgllm_dawn.CommandEncoderRelease(commandEncoder); }
static inline void wgllm_CommandEncoderResolveQuerySet(WGPUCommandEncoder commandEncoder, WGPUQuerySet querySet, uint32_t firstQuery, uint32_t queryCount, WGPUBuffer destination, uint64_t destinationOffset) { wgllm_dawn.CommandEncoderResolveQuerySet(commandEncoder, querySet, firstQuery, queryCount, destination, destinationOffset); }
static inline void wgllm_ComputePassEncoderEnd(WGPUComputePassEncoder computePassEncoder) { wgllm_dawn.ComputePassEncoderEnd(computePassEncoder); }
static inline void wgllm_ComputePassEncoderRelease(WGPUComputePassEncoder computePassEncoder) { wgllm_dawn.ComputePassEncoderRelease(computePassEncoder); }
static inline void wgllm_ComputePipelineRelease(WGPUComputePipeline computePipeline) { wgllm_dawn.ComputePipelineRelease(computePipeline); }
static inline void wgllm_DeviceDestroy(WGPUDevice device) { wgllm_dawn.DeviceDestroy(device); }
static inline WGPUStatus wgllm_DeviceGetLimits(WGPUDevice device, WGPULimits * limits) { return wgllm_dawn.DeviceGetLimits(device, limits); }
static inline WGPUQueue wgllm_DeviceGetQueue(WGPUDevice device) { return wgllm_dawn.DeviceGetQueue(device); }
static inline void wgllm_DevicePushErrorScope(WGPUDevice device, WGPUErrorFilter filter) { wgllm_dawn.DevicePushErrorScope(device, filter); }
static inline void wgllm_DeviceRelease(WGPUDevice device) { wgllm_dawn.DeviceRelease(device); }
static inline void wgllm_DeviceTick(WGPUDevice device) { wgllm_dawn.DeviceTick(device); }
static inline void wgllm_PipelineLayoutRelease(WGPUPipelineLayout pipelineLayout) { wgllm_dawn.PipelineLayoutRelease(pipelineLayout); }
static inline void wgllm_QuerySetDestroy(WGPUQuerySet querySet) { wgllm_dawn.QuerySetDestroy(querySet); }
static inline void wgllm_QuerySetRelease(WGPUQuerySet querySet) { wgllm_dawn.QuerySetRelease(querySet); }
static inline void wgllm_QueueRelease(WGPUQueue queue) { wgllm_dawn.QueueRelease(queue); }
static inline void wgllm_QueueSubmit(WGPUQueue queue, size_t commandCount, WGPUCommandBuffer const * commands) { wgllm_dawn.QueueSubmit(queue, commandCount, commands); }
static inline void wgllm_QueueWriteBuffer(WGPUQueue queue, WGPUBuffer buffer, uint64_t bufferOffset, void const * data, size_t size) { wgllm_dawn.QueueWriteBuffer(queue, buffer, bufferOffset, data, size); }
static inline void wgllm_ShaderModuleRelease(WGPUShaderModule shaderModule) { wgllm_dawn.ShaderModuleRelease(shaderModule); }
#endif
