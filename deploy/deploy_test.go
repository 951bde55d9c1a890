package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// The manifests are checked offline: each document is decoded strictly
// into the Kubernetes API's own Go types (an unknown or misspelt field, a
// wrong type or a duplicate key fails), then checked against the server
// it deploys (the probed path, the port, the metric the autoscaler reads).

const k8sDir = "k8s"

type manifests struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	ingress    *networkingv1.Ingress
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	pdb        *policyv1.PodDisruptionBudget
	configMaps []*corev1.ConfigMap
	files      []string
}

// documents splits a YAML stream at its "---" lines.
func documents(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "---" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(sc.Bytes())
		cur.WriteByte('\n')
	}
	docs = append(docs, cur.Bytes())
	return slices.DeleteFunc(docs, func(d []byte) bool { return len(bytes.TrimSpace(stripComments(d))) == 0 })
}

func stripComments(d []byte) []byte {
	var out bytes.Buffer
	for _, l := range strings.Split(string(d), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out.WriteString(l + "\n")
		}
	}
	return out.Bytes()
}

// decodeStrict decodes one document into the type its apiVersion and kind
// name, refusing unknown fields.
func decodeStrict(doc []byte) (any, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, err
	}
	var obj any
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "networking.k8s.io/v1 Ingress":
		obj = &networkingv1.Ingress{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		obj = &autoscalingv2.HorizontalPodAutoscaler{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	default:
		return nil, fmt.Errorf("apiVersion %q kind %q: not a type this test knows; add it", head.APIVersion, head.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifests
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, filepath.Base(f))
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(data) {
			obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployment = o
			case *corev1.Service:
				m.service = o
			case *networkingv1.Ingress:
				m.ingress = o
			case *autoscalingv2.HorizontalPodAutoscaler:
				m.hpa = o
			case *policyv1.PodDisruptionBudget:
				m.pdb = o
			case *corev1.ConfigMap:
				m.configMaps = append(m.configMaps, o)
			}
		}
	}
	if m.deployment == nil || m.service == nil || m.ingress == nil || m.hpa == nil || m.pdb == nil || len(m.configMaps) == 0 {
		t.Fatalf("missing manifests: %+v", m)
	}
	return m
}

// TestStrictDecodingRejectsMistakes shows the validator can fail: the
// deployment with a misspelt field, a wrong type or a duplicate key.
func TestStrictDecodingRejectsMistakes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(k8sDir, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(data); err != nil {
		t.Fatalf("the deployment itself: %v", err)
	}
	for name, broken := range map[string]string{
		"misspelt field": strings.Replace(string(data), "  replicas: 2", "  replica: 2", 1),
		"wrong type":     strings.Replace(string(data), "  replicas: 2", "  replicas: two", 1),
		"duplicate key":  strings.Replace(string(data), "  replicas: 2", "  replicas: 2\n  replicas: 3", 1),
		"unknown kind":   strings.Replace(string(data), "kind: Deployment", "kind: Deploymnt", 1),
	} {
		if broken == string(data) {
			t.Fatalf("%s: the mutation did not apply", name)
		}
		if _, err := decodeStrict([]byte(broken)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestManifestsMatchTheServer(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment
	labels := d.Spec.Template.Labels
	for k, v := range d.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("deployment selector %s=%s does not match the pod labels %v", k, v, labels)
		}
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]

	// The GPU.
	if gpus := c.Resources.Limits["nvidia.com/gpu"]; gpus.Value() != 1 {
		t.Errorf("nvidia.com/gpu limit %v, want 1", gpus.String())
	}
	// The listening port: the env's address, the container port, the probes.
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	_, port, err := net.SplitHostPort(env["WGLLM_SERVER_ADDR"])
	if err != nil || strings.HasPrefix(env["WGLLM_SERVER_ADDR"], "127.") {
		t.Errorf("WGLLM_SERVER_ADDR %q: must listen beyond loopback", env["WGLLM_SERVER_ADDR"])
	}
	var httpPort int32
	for _, p := range c.Ports {
		if p.Name == "http" {
			httpPort = p.ContainerPort
		}
	}
	if strconv.Itoa(int(httpPort)) != port {
		t.Errorf("container port http %d, server listens on %s", httpPort, port)
	}
	if !strings.Contains(env["NVIDIA_DRIVER_CAPABILITIES"], "graphics") {
		t.Error("NVIDIA_DRIVER_CAPABILITIES lacks graphics: the driver's Vulkan ICD would not be mounted")
	}
	for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET", name)
			continue
		}
		if probe.HTTPGet.Port.String() != "http" && probe.HTTPGet.Port.IntValue() != int(httpPort) {
			t.Errorf("%s probe port %v", name, probe.HTTPGet.Port.String())
		}
		checkHealthPath(t, name, probe.HTTPGet.Path)
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/health" {
		t.Errorf("readiness on %s, want /health (503 while the model loads and while draining)", c.ReadinessProbe.HTTPGet.Path)
	}
	// Shutdown: the grace period covers the server's drain and the pause.
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	pause := time.Duration(0)
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		pause = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if drain := serve.DefaultConfig().ShutdownTimeout + 2*time.Second; grace < drain+pause {
		t.Errorf("terminationGracePeriodSeconds %v < shutdown timeout and cancel grace %v + preStop %v", grace, drain, pause)
	}
	if sc := d.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pods may run as root")
	}

	// The Service selects the pods and targets the named port.
	for k, v := range m.service.Spec.Selector {
		if labels[k] != v {
			t.Errorf("service selector %s=%s does not match the pods", k, v)
		}
	}
	for _, p := range m.service.Spec.Ports {
		if p.TargetPort.String() != "http" && p.TargetPort.IntValue() != int(httpPort) {
			t.Errorf("service targets port %v", p.TargetPort.String())
		}
	}
	// The ingress routes to the Service, hashing a session header.
	for _, rule := range m.ingress.Spec.Rules {
		for _, p := range rule.HTTP.Paths {
			if p.Backend.Service == nil || p.Backend.Service.Name != m.service.Name {
				t.Errorf("ingress path %s does not route to service %s", p.Path, m.service.Name)
			}
		}
	}
	if h := m.ingress.Annotations["nginx.ingress.kubernetes.io/upstream-hash-by"]; !strings.Contains(h, "$http_") {
		t.Errorf("ingress is not sticky by a header: upstream-hash-by %q", h)
	}
	// The PDB covers the pods.
	for k, v := range m.pdb.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("PDB selector %s=%s does not match the pods", k, v)
		}
	}

	// The autoscaler scales the deployment on a metric the server exports,
	// served by the adapter rule.
	ref := m.hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != d.Name {
		t.Errorf("HPA scales %s %s, want Deployment %s", ref.Kind, ref.Name, d.Name)
	}
	if len(m.hpa.Spec.Metrics) != 1 || m.hpa.Spec.Metrics[0].Pods == nil {
		t.Fatalf("HPA metrics %+v: want one Pods metric", m.hpa.Spec.Metrics)
	}
	metric := m.hpa.Spec.Metrics[0].Pods.Metric.Name
	if !slices.Contains(exportedMetrics(t), metric) {
		t.Errorf("HPA reads %q, which the server does not export", metric)
	}
	if !strings.Contains(metric, "queue_depth") {
		t.Errorf("HPA reads %q, want the queue depth", metric)
	}
	var adapter struct {
		Rules []struct {
			SeriesQuery string `json:"seriesQuery"`
			Name        struct {
				As string `json:"as"`
			} `json:"name"`
		} `json:"rules"`
	}
	// The adapter's config has more fields than this struct reads.
	if err := yaml.Unmarshal([]byte(m.configMaps[0].Data["config.yaml"]), &adapter); err != nil {
		t.Fatalf("prometheus-adapter config: %v", err)
	}
	served := false
	for _, r := range adapter.Rules {
		if strings.Contains(r.SeriesQuery, metric) && r.Name.As == metric {
			served = true
		}
	}
	if !served {
		t.Errorf("no prometheus-adapter rule serves %q: %+v", metric, adapter.Rules)
	}

	// kubectl apply -k applies every manifest.
	var kust struct {
		Resources []string `json:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kust); err != nil {
		t.Fatal(err)
	}
	sort.Strings(kust.Resources)
	if strings.Join(kust.Resources, " ") != strings.Join(m.files, " ") {
		t.Errorf("kustomization lists %v, the directory holds %v", kust.Resources, m.files)
	}
}

// checkHealthPath asks the real server for path: it must exist, answer 503
// before the model is ready and 200 after.
func checkHealthPath(t *testing.T, probe, path string) {
	t.Helper()
	srv := serve.New(serve.Config{APIKey: "probes-carry-no-key"}, zerolog.Nop())
	get := func() int {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if code := get(); code != http.StatusServiceUnavailable {
		t.Errorf("%s probe %s answers %d before the model is loaded, want 503", probe, path, code)
	}
	b := servetest.New(servetest.Options{})
	defer b.Close()
	srv.SetBackend(b)
	if code := get(); code != http.StatusOK {
		t.Errorf("%s probe %s answers %d with the model loaded (and an API key set), want 200", probe, path, code)
	}
}

// exportedMetrics lists the metric names of the server's /metrics.
func exportedMetrics(t *testing.T) []string {
	t.Helper()
	srv := serve.New(serve.Config{}, zerolog.Nop())
	b := servetest.New(servetest.Options{})
	defer b.Close()
	srv.SetBackend(b)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	var names []string
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	if len(names) == 0 {
		t.Fatalf("no metrics in %q", rec.Body.String())
	}
	return names
}

// --- Dockerfile -----------------------------------------------------------------

type instruction struct {
	line int
	op   string // upper case
	args string
}

type stage struct {
	name, image string
	instrs      []instruction
}

// parseDockerfile reads instructions (continuation lines joined, comments
// dropped) grouped by stage.
func parseDockerfile(r io.Reader) ([]stage, error) {
	var stages []stage
	sc := bufio.NewScanner(r)
	n, start := 0, 0
	var cur strings.Builder
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		op, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, op: strings.ToUpper(op), args: strings.TrimSpace(args)}
		if in.op == "FROM" {
			f := strings.Fields(in.args)
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return nil
		}
		if len(stages) == 0 {
			return fmt.Errorf("line %d: %s before FROM", in.line, in.op)
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		return nil
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		if cur.Len() == 0 {
			if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			start = n
		} else if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if cur.Len() > 0 {
		return nil, errors.New("the file ends in a continuation line")
	}
	return stages, sc.Err()
}

// TestDockerfile checks what a build would: every file it copies exists
// (and is not excluded by .dockerignore), stages exist, the Go image is as
// new as go.mod asks, cgo has gcc, the runtime has the Vulkan loader and
// lavapipe, runs as a user and checks /health on the port it listens on.
// (No Docker engine runs here to build it.)
func TestDockerfile(t *testing.T) {
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages, err := parseDockerfile(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	build, runtime := stages[0], stages[len(stages)-1]
	ignored := dockerignore(t)

	// The Go image is at least go.mod's version.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(gomod)
	got := regexp.MustCompile(`^golang:(\d+)\.(\d+)`).FindStringSubmatch(build.image)
	if want == nil || got == nil {
		t.Fatalf("go.mod go line %q, build image %q", want, build.image)
	}
	if gm, _ := strconv.Atoi(got[1]); gm != atoi(string(want[1])) || atoi(got[2]) < atoi(string(want[2])) {
		t.Errorf("build image %s is older than go.mod's go %s.%s", build.image, want[1], want[2])
	}
	if !strings.HasPrefix(runtime.image, "debian:") || !strings.HasSuffix(runtime.image, "-slim") {
		t.Errorf("runtime image %s, want Debian slim", runtime.image)
	}

	names := map[string]bool{}
	for _, s := range stages {
		if s.name != "" {
			names[s.name] = true
		}
	}
	has := func(s stage, op, substr string) bool {
		for _, in := range s.instrs {
			if in.op == op && strings.Contains(in.args, substr) {
				return true
			}
		}
		return false
	}
	for _, pkg := range []string{"gcc", "CGO_ENABLED=1"} {
		if !has(build, "RUN", pkg) {
			t.Errorf("build stage lacks %s", pkg)
		}
	}
	for _, pkg := range []string{"libvulkan1", "mesa-vulkan-drivers"} {
		if !has(runtime, "RUN", pkg) {
			t.Errorf("runtime stage does not install %s", pkg)
		}
	}

	var user, healthcheck, expose string
	env := map[string]string{}
	for _, s := range stages {
		for _, in := range s.instrs {
			switch in.op {
			case "COPY", "ADD":
				f := strings.Fields(in.args)
				var from string
				var srcs []string
				for _, a := range f[:len(f)-1] {
					if v, ok := strings.CutPrefix(a, "--from="); ok {
						from = v
					} else if !strings.HasPrefix(a, "--") {
						srcs = append(srcs, a)
					}
				}
				if from != "" {
					if !names[from] {
						t.Errorf("line %d: COPY --from=%s: no such stage", in.line, from)
					}
					continue
				}
				for _, src := range srcs {
					if _, err := os.Stat(filepath.Join("..", src)); err != nil {
						t.Errorf("line %d: COPY %s: %v", in.line, src, err)
					}
					if src != "." && ignored(src) {
						t.Errorf("line %d: COPY %s, which .dockerignore leaves out of the context", in.line, src)
					}
				}
			}
		}
	}
	for _, in := range runtime.instrs {
		switch in.op {
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			healthcheck = in.args
		case "EXPOSE":
			expose = in.args
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		t.Errorf("the runtime runs as %q, want a non-root user", user)
	}
	_, port, err := net.SplitHostPort(env["WGLLM_SERVER_ADDR"])
	if err != nil || strings.HasPrefix(env["WGLLM_SERVER_ADDR"], "127.") {
		t.Errorf("WGLLM_SERVER_ADDR %q: the container must listen beyond loopback", env["WGLLM_SERVER_ADDR"])
	}
	if expose != port {
		t.Errorf("EXPOSE %s, the server listens on %s", expose, port)
	}
	if !strings.Contains(healthcheck, "127.0.0.1:"+port+"/health") {
		t.Errorf("HEALTHCHECK %q does not check /health on port %s", healthcheck, port)
	}
	checkHealthPath(t, "HEALTHCHECK", "/health")
	// The default model is in the image.
	if mp := env["WGLLM_MODEL_PATH"]; !has(runtime, "COPY", mp) {
		t.Errorf("WGLLM_MODEL_PATH %q is not copied into the image", mp)
	}
	if !strings.Contains(env["NVIDIA_DRIVER_CAPABILITIES"], "graphics") {
		t.Error("NVIDIA_DRIVER_CAPABILITIES lacks graphics: the driver's Vulkan ICD would not be mounted")
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// dockerignore returns whether .dockerignore leaves a path out (plain
// names and globs, as this repository uses).
func dockerignore(t *testing.T) func(string) bool {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	return func(path string) bool {
		for _, p := range patterns {
			for part := path; part != "." && part != ""; part = filepath.Dir(part) {
				if ok, _ := filepath.Match(p, part); ok {
					return true
				}
			}
		}
		return false
	}
}

func TestParseDockerfileRejectsBrokenFiles(t *testing.T) {
	if _, err := parseDockerfile(strings.NewReader("RUN x\nFROM a\n")); err == nil {
		t.Error("RUN before FROM accepted")
	}
	if _, err := parseDockerfile(strings.NewReader("FROM a\nRUN x \\\n")); err == nil {
		t.Error("a dangling continuation accepted")
	}
	st, err := parseDockerfile(strings.NewReader("FROM a AS b\nRUN x \\\n  # note\n  y\nCOPY --from=b /x /y\n"))
	if err != nil || len(st) != 1 || st[0].name != "b" || len(st[0].instrs) != 2 || st[0].instrs[0].args != "x    y" {
		t.Errorf("parsed %+v, %v", st, err)
	}
}
