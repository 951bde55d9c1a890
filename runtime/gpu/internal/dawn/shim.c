//go:build (linux || darwin) && cgo

#include <dlfcn.h>
#include <string.h>
#include "shim.h"
#include "_cgo_export.h"

wgllm_dawn_procs wgllm_dawn;

const char *wgllm_dawn_open(const char *path) {
	// RTLD_LOCAL: the library's thousands of C++ symbols (Tint, Abseil,
	// SPIRV-Tools) stay out of the process's global scope.
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) return dlerror();
#define WGLLM_DAWN_LOAD(n) \
	wgllm_dawn.n = (WGPUProc##n)dlsym(h, "wgpu" #n); \
	if (!wgllm_dawn.n) return "the library lacks wgpu" #n;
	WGLLM_DAWN_FUNCS(WGLLM_DAWN_LOAD)
#undef WGLLM_DAWN_LOAD
	return NULL;
}

static WGPUStringView sv(const char *s) {
	WGPUStringView v = {s, s ? WGPU_STRLEN : 0};
	return v;
}

static char *sv_dup(WGPUStringView v) {
	if (!v.data) return NULL;
	size_t n = v.length == WGPU_STRLEN ? strlen(v.data) : v.length;
	char *s = malloc(n + 1);
	if (!s) return NULL;
	memcpy(s, v.data, n);
	s[n] = 0;
	return s;
}

static void sv_copy(char *dst, size_t cap, WGPUStringView v) {
	size_t n = 0;
	if (v.data) n = v.length == WGPU_STRLEN ? strlen(v.data) : v.length;
	if (n >= cap) n = cap - 1;
	if (n) memcpy(dst, v.data, n);
	dst[n] = 0;
}

wgllm_result *wgllm_result_new(void) { return calloc(1, sizeof(wgllm_result)); }

void wgllm_result_free(wgllm_result *r) {
	if (!r) return;
	free(r->message);
	free(r);
}

int wgllm_wait(WGPUInstance inst, WGPUFuture f, uint64_t timeout_ns) {
	WGPUFutureWaitInfo w = {f, 0};
	return (int)wgllm_dawn.InstanceWaitAny(inst, 1, &w, timeout_ns);
}

WGPUInstance wgllm_create_instance(void) {
	WGPUInstanceDescriptor d;
	memset(&d, 0, sizeof d);
	d.capabilities.timedWaitAnyEnable = 1;
	d.capabilities.timedWaitAnyMaxCount = 1;
	return wgllm_dawn.CreateInstance(&d);
}

static void on_adapter(WGPURequestAdapterStatus s, WGPUAdapter a, WGPUStringView m, void *u1, void *u2) {
	wgllm_result *r = u1;
	r->status = (int32_t)s;
	r->object = a;
	r->message = sv_dup(m);
	r->done = 1;
}

WGPUFuture wgllm_request_adapter(WGPUInstance inst, WGPUBackendType backend, int fallback, wgllm_result *r) {
	WGPURequestAdapterOptions o;
	memset(&o, 0, sizeof o);
	o.featureLevel = WGPUFeatureLevel_Core;
	o.powerPreference = WGPUPowerPreference_HighPerformance;
	o.backendType = backend;
	o.forceFallbackAdapter = fallback;
	WGPURequestAdapterCallbackInfo ci;
	memset(&ci, 0, sizeof ci);
	ci.mode = WGPUCallbackMode_WaitAnyOnly;
	ci.callback = on_adapter;
	ci.userdata1 = r;
	return wgllm_dawn.InstanceRequestAdapter(inst, &o, ci);
}

void wgllm_adapter_info_get(WGPUInstance inst, WGPUAdapter a, wgllm_adapter_info *out) {
	memset(out, 0, sizeof *out);
	WGPUAdapterInfo info;
	memset(&info, 0, sizeof info);
	if (wgllm_dawn.AdapterGetInfo(a, &info) == WGPUStatus_Success) {
		sv_copy(out->name, sizeof out->name, info.device);
		sv_copy(out->vendor, sizeof out->vendor, info.vendor);
		sv_copy(out->driver, sizeof out->driver, info.description);
		out->backend = (int)info.backendType;
		out->type = (int)info.adapterType;
		out->sg_min = info.subgroupMinSize;
		out->sg_max = info.subgroupMaxSize;
		wgllm_dawn.AdapterInfoFreeMembers(info);
	}
	wgllm_dawn.AdapterGetLimits(a, &out->limits);
	out->f16 = wgllm_dawn.AdapterHasFeature(a, WGPUFeatureName_ShaderF16);
	out->subgroups = wgllm_dawn.AdapterHasFeature(a, WGPUFeatureName_Subgroups);
	out->timestamps = wgllm_dawn.AdapterHasFeature(a, WGPUFeatureName_TimestampQuery);
	out->sgmatrix = wgllm_dawn.AdapterHasFeature(a, WGPUFeatureName_ChromiumExperimentalSubgroupMatrix);
	out->dot4i8 = wgllm_dawn.InstanceHasWGSLLanguageFeature(inst, WGPUWGSLLanguageFeatureName_Packed4x8IntegerDotProduct);
}

static void on_lost(WGPUDevice const *dev, WGPUDeviceLostReason reason, WGPUStringView m, void *u1, void *u2) {
	char *msg = sv_dup(m);
	wgllmDawnDeviceLost((int)reason, msg, (uintptr_t)u1);
	free(msg);
}

static void on_error(WGPUDevice const *dev, WGPUErrorType type, WGPUStringView m, void *u1, void *u2) {
	char *msg = sv_dup(m);
	wgllmDawnUncapturedError((int)type, msg, (uintptr_t)u1);
	free(msg);
}

static void on_device(WGPURequestDeviceStatus s, WGPUDevice d, WGPUStringView m, void *u1, void *u2) {
	wgllm_result *r = u1;
	r->status = (int32_t)s;
	r->object = d;
	r->message = sv_dup(m);
	r->done = 1;
}

WGPUFuture wgllm_request_device(WGPUAdapter a, wgllm_device_req r, uintptr_t token, wgllm_result *res) {
	WGPULimits lim;
	// Every limit left undefined keeps the WebGPU default.
	memset(&lim, 0xff, sizeof lim);
	lim.nextInChain = NULL;
	lim.maxStorageBufferBindingSize = r.max_binding;
	lim.maxBufferSize = r.max_buffer;
	lim.maxComputeWorkgroupStorageSize = r.wg_storage;
	lim.maxComputeInvocationsPerWorkgroup = r.invocations;
	lim.maxComputeWorkgroupSizeX = r.wg_x;
	lim.maxComputeWorkgroupSizeY = r.wg_y;
	lim.maxStorageBuffersPerShaderStage = r.storage_buffers;

	WGPUFeatureName features[4];
	size_t nf = 0;
	// Calls from several goroutines (threads) then serialise inside Dawn, as
	// they do in wgpu-native; without it a Dawn device is single-threaded.
	if (wgllm_dawn.AdapterHasFeature(a, WGPUFeatureName_ImplicitDeviceSynchronization))
		features[nf++] = WGPUFeatureName_ImplicitDeviceSynchronization;
	if (r.f16) features[nf++] = WGPUFeatureName_ShaderF16;
	if (r.subgroups) features[nf++] = WGPUFeatureName_Subgroups;
	if (r.timestamps) features[nf++] = WGPUFeatureName_TimestampQuery;

	// Profiling wants timestamps as the GPU wrote them, not rounded.
	static const char *disabled[] = {"timestamp_quantization"};
	WGPUDawnTogglesDescriptor toggles;
	memset(&toggles, 0, sizeof toggles);
	toggles.chain.sType = WGPUSType_DawnTogglesDescriptor;
	toggles.disabledToggleCount = 1;
	toggles.disabledToggles = disabled;

	WGPUDeviceDescriptor d;
	memset(&d, 0, sizeof d);
	d.nextInChain = &toggles.chain;
	d.label = sv("wgllm");
	d.requiredLimits = &lim;
	d.requiredFeatureCount = nf;
	d.requiredFeatures = features;
	d.deviceLostCallbackInfo.mode = WGPUCallbackMode_AllowSpontaneous;
	d.deviceLostCallbackInfo.callback = on_lost;
	d.deviceLostCallbackInfo.userdata1 = (void *)token;
	d.uncapturedErrorCallbackInfo.callback = on_error;
	d.uncapturedErrorCallbackInfo.userdata1 = (void *)token;
	WGPURequestDeviceCallbackInfo ci;
	memset(&ci, 0, sizeof ci);
	ci.mode = WGPUCallbackMode_WaitAnyOnly;
	ci.callback = on_device;
	ci.userdata1 = res;
	return wgllm_dawn.AdapterRequestDevice(a, &d, ci);
}

static void on_pop(WGPUPopErrorScopeStatus s, WGPUErrorType type, WGPUStringView m, void *u1, void *u2) {
	wgllm_result *r = u1;
	r->status = (int32_t)s;
	r->type = (int32_t)type;
	r->message = sv_dup(m);
	r->done = 1;
}

WGPUFuture wgllm_pop_error_scope(WGPUDevice d, wgllm_result *r) {
	WGPUPopErrorScopeCallbackInfo ci;
	memset(&ci, 0, sizeof ci);
	ci.mode = WGPUCallbackMode_WaitAnyOnly;
	ci.callback = on_pop;
	ci.userdata1 = r;
	return wgllm_dawn.DevicePopErrorScope(d, ci);
}

static void on_map(WGPUMapAsyncStatus s, WGPUStringView m, void *u1, void *u2) {
	wgllm_result *r = u1;
	r->status = (int32_t)s;
	r->message = sv_dup(m);
	r->done = 1;
}

WGPUFuture wgllm_map_read(WGPUBuffer b, size_t off, size_t size, wgllm_result *r) {
	WGPUBufferMapCallbackInfo ci;
	memset(&ci, 0, sizeof ci);
	ci.mode = WGPUCallbackMode_WaitAnyOnly;
	ci.callback = on_map;
	ci.userdata1 = r;
	return wgllm_dawn.BufferMapAsync(b, WGPUMapMode_Read, off, size, ci);
}

static void on_done(WGPUQueueWorkDoneStatus s, WGPUStringView m, void *u1, void *u2) {
	wgllm_result *r = u1;
	r->status = (int32_t)s;
	r->message = sv_dup(m);
	r->done = 1;
}

WGPUFuture wgllm_work_done(WGPUQueue q, wgllm_result *r) {
	WGPUQueueWorkDoneCallbackInfo ci;
	memset(&ci, 0, sizeof ci);
	ci.mode = WGPUCallbackMode_WaitAnyOnly;
	ci.callback = on_done;
	ci.userdata1 = r;
	return wgllm_dawn.QueueOnSubmittedWorkDone(q, ci);
}

WGPUBuffer wgllm_create_buffer(WGPUDevice d, const char *label, uint64_t size, uint64_t usage) {
	WGPUBufferDescriptor bd;
	memset(&bd, 0, sizeof bd);
	bd.label = sv(label);
	bd.size = size;
	bd.usage = usage;
	return wgllm_dawn.DeviceCreateBuffer(d, &bd);
}

WGPUComputePipeline wgllm_create_pipeline(WGPUDevice d, const char *label, const char *code, size_t code_len,
	const char *entry, int n_storage, const int *read_write, WGPUBindGroupLayout *bgl_out,
	WGPUPipelineLayout *layout_out, WGPUShaderModule *module_out) {
	WGPUShaderSourceWGSL src;
	memset(&src, 0, sizeof src);
	src.chain.sType = WGPUSType_ShaderSourceWGSL;
	src.code.data = code;
	src.code.length = code_len;
	WGPUShaderModuleDescriptor md;
	memset(&md, 0, sizeof md);
	md.nextInChain = &src.chain;
	md.label = sv(label);
	WGPUShaderModule mod = wgllm_dawn.DeviceCreateShaderModule(d, &md);

	WGPUBindGroupLayoutEntry entries[16];
	int n = n_storage + 1 > 16 ? 16 : n_storage + 1;
	memset(entries, 0, sizeof entries);
	for (int i = 0; i < n; i++) {
		entries[i].binding = (uint32_t)i;
		entries[i].visibility = WGPUShaderStage_Compute;
		if (i == 0) {
			entries[i].buffer.type = WGPUBufferBindingType_Uniform;
			entries[i].buffer.hasDynamicOffset = 1;
		} else {
			entries[i].buffer.type = read_write[i - 1] ? WGPUBufferBindingType_Storage : WGPUBufferBindingType_ReadOnlyStorage;
		}
	}
	WGPUBindGroupLayoutDescriptor bd;
	memset(&bd, 0, sizeof bd);
	bd.label = sv(label);
	bd.entryCount = (size_t)n;
	bd.entries = entries;
	WGPUBindGroupLayout bgl = wgllm_dawn.DeviceCreateBindGroupLayout(d, &bd);

	WGPUPipelineLayoutDescriptor pd;
	memset(&pd, 0, sizeof pd);
	pd.label = sv(label);
	pd.bindGroupLayoutCount = 1;
	pd.bindGroupLayouts = &bgl;
	WGPUPipelineLayout layout = wgllm_dawn.DeviceCreatePipelineLayout(d, &pd);

	WGPUComputePipelineDescriptor cd;
	memset(&cd, 0, sizeof cd);
	cd.label = sv(label);
	cd.layout = layout;
	cd.compute.module = mod;
	cd.compute.entryPoint = sv(entry);
	WGPUComputePipeline pipe = wgllm_dawn.DeviceCreateComputePipeline(d, &cd);
	*bgl_out = bgl;
	*layout_out = layout;
	*module_out = mod;
	return pipe;
}

WGPUBindGroup wgllm_create_bind_group(WGPUDevice d, WGPUBindGroupLayout bgl, WGPUBuffer uniform, uint64_t uniform_size,
	int n, const WGPUBuffer *bufs, const uint64_t *offsets, const uint64_t *sizes) {
	WGPUBindGroupEntry entries[16];
	if (n + 1 > 16) n = 15;
	memset(entries, 0, sizeof entries);
	entries[0].binding = 0;
	entries[0].buffer = uniform;
	entries[0].size = uniform_size;
	for (int i = 0; i < n; i++) {
		entries[i + 1].binding = (uint32_t)(i + 1);
		entries[i + 1].buffer = bufs[i];
		entries[i + 1].offset = offsets[i];
		entries[i + 1].size = sizes[i];
	}
	WGPUBindGroupDescriptor bd;
	memset(&bd, 0, sizeof bd);
	bd.layout = bgl;
	bd.entryCount = (size_t)(n + 1);
	bd.entries = entries;
	return wgllm_dawn.DeviceCreateBindGroup(d, &bd);
}

WGPUQuerySet wgllm_create_timestamps(WGPUDevice d, uint32_t count) {
	WGPUQuerySetDescriptor qd;
	memset(&qd, 0, sizeof qd);
	qd.label = sv("profile");
	qd.type = WGPUQueryType_Timestamp;
	qd.count = count;
	return wgllm_dawn.DeviceCreateQuerySet(d, &qd);
}

WGPUComputePassEncoder wgllm_begin_pass(WGPUCommandEncoder e, WGPUQuerySet qs, uint32_t index) {
	WGPUPassTimestampWrites tw;
	memset(&tw, 0, sizeof tw);
	WGPUComputePassDescriptor pd;
	memset(&pd, 0, sizeof pd);
	if (qs) {
		tw.querySet = qs;
		tw.beginningOfPassWriteIndex = 2 * index;
		tw.endOfPassWriteIndex = 2 * index + 1;
		pd.timestampWrites = &tw;
	}
	return wgllm_dawn.CommandEncoderBeginComputePass(e, &pd);
}

void wgllm_dispatch(WGPUComputePassEncoder p, WGPUComputePipeline pipe, WGPUBindGroup bg, uint32_t off,
	uint32_t x, uint32_t y, uint32_t z) {
	wgllm_dawn.ComputePassEncoderSetPipeline(p, pipe);
	wgllm_dawn.ComputePassEncoderSetBindGroup(p, 0, bg, 1, &off);
	wgllm_dawn.ComputePassEncoderDispatchWorkgroups(p, x, y, z);
}

WGPUCommandEncoder wgllm_create_encoder(WGPUDevice d) {
	WGPUCommandEncoderDescriptor ed;
	memset(&ed, 0, sizeof ed);
	return wgllm_dawn.DeviceCreateCommandEncoder(d, &ed);
}

WGPUCommandBuffer wgllm_finish(WGPUCommandEncoder e) {
	WGPUCommandBufferDescriptor cd;
	memset(&cd, 0, sizeof cd);
	return wgllm_dawn.CommandEncoderFinish(e, &cd);
}
