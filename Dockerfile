# wgllm in a container: the server with the bundled model.
#
#   docker build -t wgllm .
#   docker run --rm -p 8080:8080 wgllm                  # any machine: lavapipe (CPU) when there is no GPU
#   docker run --rm -p 8080:8080 --gpus all wgllm       # NVIDIA, with the NVIDIA Container Toolkit
#
# Serve other models by mounting them and pointing WGLLM_MODEL_PATH (the
# default model) or WGLLM_MODELS_DIR (more, loaded on demand) at them; set
# WGLLM_SERVER_API_KEY. docs/DEPLOY.md has the rest.

# --- build: Go with gcc, since the WebGPU binding is cgo -----------------------
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -o /out/wgllm ./cmd/wgllm

# --- runtime: the Vulkan loader and Mesa's drivers (lavapipe runs on CPU) ------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/wgllm --shell /usr/sbin/nologin wgllm
WORKDIR /opt/wgllm
COPY --from=build /out/wgllm /usr/local/bin/wgllm
COPY models/kjv-30m-q4_k_m.gguf /opt/wgllm/models/kjv-30m-q4_k_m.gguf
# NVIDIA's container runtime mounts the driver's Vulkan ICD only with the
# graphics capability.
ENV WGLLM_SERVER_ADDR=0.0.0.0:8080 \
    WGLLM_MODEL_PATH=/opt/wgllm/models/kjv-30m-q4_k_m.gguf \
    WGLLM_LOG_FORMAT=json \
    XDG_CACHE_HOME=/tmp/cache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/wgllm"]
CMD ["serve"]
