package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/runtime"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

const k8sDir = "k8s"

// kustomization is the part of kustomize's Kustomization the base uses
// (decoded strictly, like the manifests).
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests are the base's objects, decoded with the Kubernetes API types.
type manifests struct {
	kustomization
	deployment *appsv1.Deployment
	service    *corev1.Service
	pdb        *policyv1.PodDisruptionBudget
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	pvc        *corev1.PersistentVolumeClaim
}

// loadManifests reads kustomization.yaml and every resource it lists,
// decoding each document strictly (an unknown or misplaced field fails) as
// the type its apiVersion and kind name; it checks that every YAML file of
// the directory is listed.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	var m manifests
	raw, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &m.kustomization); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml is %s %s", m.APIVersion, m.Kind)
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(m.Resources, base) {
			t.Errorf("%s is not in kustomization.yaml's resources", f)
		}
	}
	for _, res := range m.Resources {
		raw, err := os.ReadFile(filepath.Join(k8sDir, res))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s, document %d: %v", res, i+1, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				m.deployment = &appsv1.Deployment{}
				obj = m.deployment
			case "v1 Service":
				m.service = &corev1.Service{}
				obj = m.service
			case "policy/v1 PodDisruptionBudget":
				m.pdb = &policyv1.PodDisruptionBudget{}
				obj = m.pdb
			case "autoscaling/v2 HorizontalPodAutoscaler":
				m.hpa = &autoscalingv2.HorizontalPodAutoscaler{}
				obj = m.hpa
			case "v1 PersistentVolumeClaim":
				m.pvc = &corev1.PersistentVolumeClaim{}
				obj = m.pvc
			default:
				t.Fatalf("%s, document %d: unexpected %s %s", res, i+1, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s, document %d (%s): %v", res, i+1, tm.Kind, err)
			}
		}
	}
	if m.deployment == nil || m.service == nil || m.pdb == nil || m.hpa == nil || m.pvc == nil {
		t.Fatal("the base needs a Deployment, a Service, a PodDisruptionBudget, a HorizontalPodAutoscaler and the models' PersistentVolumeClaim")
	}
	return &m
}

func stripComments(doc string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")
}

// hpaMetric is the Pods metric the HorizontalPodAutoscaler scales on.
func hpaMetric(t *testing.T) string {
	t.Helper()
	hpa := loadManifests(t).hpa
	if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].Type != autoscalingv2.PodsMetricSourceType || hpa.Spec.Metrics[0].Pods == nil {
		t.Fatalf("the HPA's metrics %+v: want one Pods metric", hpa.Spec.Metrics)
	}
	return hpa.Spec.Metrics[0].Pods.Metric.Name
}

// podContainers are the pod's containers in start order: init containers
// (the sidecars), then the others.
func podContainers(pod *corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(pod.InitContainers), pod.Containers...)
}

func envMap(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
	}
	return out
}

// listenPorts are the ports a container's *LISTEN variables listen on.
func listenPorts(env map[string]string) map[int32]bool {
	out := map[int32]bool{}
	for k, v := range env {
		if strings.HasSuffix(k, "LISTEN") {
			_, p, _ := strings.Cut(v, ":")
			n, _ := strconv.Atoi(p)
			out[int32(n)] = true
		}
	}
	return out
}

// probeWithin is how long the kubelet gives a probe before it counts as
// failed for good: period × failure threshold (its defaults: 10s, 3).
func probeWithin(p *corev1.Probe) time.Duration {
	period, threshold := p.PeriodSeconds, p.FailureThreshold
	if period == 0 {
		period = 10
	}
	if threshold == 0 {
		threshold = 3
	}
	return time.Duration(period*threshold) * time.Second
}

// TestKubernetes checks the base: a native sidecar loader sharing an
// in-memory emptyDir with the inference container, resources for the
// 2 vCPU / 6 GiB target, gRPC probes on ports the containers listen on, a
// headless Service, the PDB and the HPA pointing at the Deployment, and
// every command, variable and port against the image's binaries.
func TestKubernetes(t *testing.T) {
	img := loadImage(t)
	m := loadManifests(t)
	d := m.deployment
	pod := &d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("the Deployment's selector %v does not match its pods' labels %v (%v)", d.Spec.Selector, podLabels, err)
	}

	// The containers: one sidecar (the loader), one service; the image and
	// binaries the Dockerfile builds.
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("want one init container (the loader sidecar) and one container, have %d and %d", len(pod.InitContainers), len(pod.Containers))
	}
	loader, inference := pod.InitContainers[0], pod.Containers[0]
	if loader.RestartPolicy == nil || *loader.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("the loader is no native sidecar: restartPolicy %v, want Always", loader.RestartPolicy)
	}
	var cpuRequests, memLimits resource.Quantity
	for _, c := range podContainers(pod) {
		where := "container " + c.Name
		images := []string{}
		for _, im := range m.Images {
			images = append(images, im.Name)
		}
		if !slices.Contains(images, c.Image) {
			t.Errorf("%s: image %q is not one kustomization.yaml sets (%v)", where, c.Image, images)
		}
		if len(c.Command) != 1 {
			t.Errorf("%s: command %q, want one of the image's binaries", where, c.Command)
			continue
		}
		env := envMap(c)
		fl := img.flagsOf(t, c.Command[0])
		fl.checkEnv(t, where, env)
		fl.checkArgs(t, where, c.Args)
		listens := listenPorts(env)
		ports := map[int32]bool{}
		for _, p := range c.Ports {
			ports[p.ContainerPort] = true
			if !listens[p.ContainerPort] {
				t.Errorf("%s: port %s %d is not one it listens on", where, p.Name, p.ContainerPort)
			}
		}
		for kind, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if p == nil {
				continue
			}
			if p.GRPC == nil {
				t.Errorf("%s: %s probe is not a gRPC one", where, kind)
			} else if !ports[p.GRPC.Port] {
				t.Errorf("%s: %s probe asks port %d, not one of its ports", where, kind, p.GRPC.Port)
			}
		}
		req, lim := c.Resources.Requests, c.Resources.Limits
		if !req.Memory().Equal(*lim.Memory()) || lim.Memory().IsZero() {
			t.Errorf("%s: memory request %v, limit %v; want them equal", where, req.Memory(), lim.Memory())
		}
		cpuRequests.Add(*req.Cpu())
		memLimits.Add(*lim.Memory())
		if lim.Cpu().Cmp(resource.MustParse("2")) != 0 {
			t.Errorf("%s: CPU limit %v, want the target's 2", where, lim.Cpu())
		}
	}
	if cpuRequests.Cmp(resource.MustParse("2")) != 0 {
		t.Errorf("CPU requests add up to %v, want 2", &cpuRequests)
	}
	if memLimits.Cmp(resource.MustParse("6Gi")) != 0 {
		t.Errorf("memory limits add up to %v, want 6Gi", &memLimits)
	}

	// The inference container: gRPC probes on the service's health, a
	// startup probe that covers a load, a grace shorter than the pod's.
	if inference.StartupProbe == nil || inference.ReadinessProbe == nil || inference.LivenessProbe == nil {
		t.Fatal("the inference container needs startup, readiness and liveness probes")
	}
	if within := probeWithin(inference.StartupProbe); within < 10*time.Minute {
		t.Errorf("the startup probe gives a load %v; an 8B model on 2 vCPUs needs minutes: want ≥ 10m", within)
	}
	if s := inference.ReadinessProbe.GRPC.Service; s == nil || *s != corelmv1.InferenceService_ServiceDesc.ServiceName {
		t.Errorf("the readiness probe asks service %v, want %s (it follows the models)", s, corelmv1.InferenceService_ServiceDesc.ServiceName)
	}
	if s := inference.LivenessProbe.GRPC.Service; s != nil && *s != "" {
		t.Errorf("the liveness probe asks service %q, want the whole server (alive from start to SIGTERM)", *s)
	}
	if grace, err := time.ParseDuration(envMap(inference)["CORELM_SHUTDOWN_GRACE"]); err != nil ||
		pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= grace+5*time.Second {
		t.Errorf("shutdown grace %v (%v) must fit in the pod's termination grace %v with time to spare", grace, err, pod.TerminationGracePeriodSeconds)
	}
	if envMap(inference)["CORELM_REQUIRE_MODELS"] == "" {
		t.Error("the inference container requires no models: it would be ready before any is loaded")
	}

	// The in-memory emptyDir: where the loader publishes, read-only in the
	// inference container at the same path; sized like the loader's budget
	// and counted in the loader's memory limit (it writes the pages).
	var shm *corev1.Volume
	for i, v := range pod.Volumes {
		if v.EmptyDir != nil {
			shm = &pod.Volumes[i]
		}
	}
	if shm == nil || shm.EmptyDir.Medium != corev1.StorageMediumMemory || shm.EmptyDir.SizeLimit == nil {
		t.Fatalf("want an emptyDir of medium Memory with a sizeLimit, have %+v", shm)
	}
	size := shm.EmptyDir.SizeLimit
	shmDir := envMap(loader)["CORELM_LOADER_SHM_DIR"]
	mountOf := func(c corev1.Container) *corev1.VolumeMount {
		for i, vm := range c.VolumeMounts {
			if vm.Name == shm.Name {
				return &c.VolumeMounts[i]
			}
		}
		return nil
	}
	if lm, im := mountOf(loader), mountOf(inference); lm == nil || lm.MountPath != shmDir || lm.ReadOnly || im == nil || im.MountPath != shmDir || !im.ReadOnly {
		t.Errorf("emptyDir mounts: loader %+v, inference %+v; want both at %s, read-only in inference", lm, im, shmDir)
	}
	if budget, err := runtime.ParseBytes(envMap(loader)["CORELM_LOADER_BUDGET"]); err != nil || budget != size.Value() {
		t.Errorf("the loader's budget %d (%v), the emptyDir's sizeLimit %v: want them equal", budget, err, size)
	}
	own := loader.Resources.Limits.Memory().DeepCopy()
	own.Sub(*size)
	if own.Cmp(resource.MustParse("256Mi")) < 0 {
		t.Errorf("the loader's memory limit %v holds the emptyDir (%v) and only %v of its own", loader.Resources.Limits.Memory(), size, &own)
	}
	checkMemoryBudget(t, envMap(inference)["CORELM_MEMORY_BUDGET"], size.Value(), inference.Resources.Limits.Memory().Value())
	for _, vm := range loader.VolumeMounts {
		if vm.Name != shm.Name && !strings.Contains(envMap(loader)["CORELM_LOADER_MODEL"], vm.MountPath+"/") {
			t.Errorf("the loader mounts %s at %s, where no model it is told to load is", vm.Name, vm.MountPath)
		}
	}

	// Prometheus finds the metrics where the inference container serves them.
	ann := d.Spec.Template.Annotations
	if port, _ := strconv.Atoi(ann["prometheus.io/port"]); ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" ||
		!listenPorts(map[string]string{"CORELM_METRICS_LISTEN": envMap(inference)["CORELM_METRICS_LISTEN"]})[int32(port)] {
		t.Errorf("scrape annotations %v: want the inference container's --metrics-listen port and /metrics", ann)
	}

	// The headless Service: every ready pod in DNS, the gRPC port.
	svc := m.service
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Name != "corelm-inference-headless" {
		t.Errorf("Service %s has clusterIP %q, want a headless corelm-inference-headless", svc.Name, svc.Spec.ClusterIP)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("the Service's selector %v does not select the pods %v", svc.Spec.Selector, podLabels)
	}
	if len(svc.Spec.Ports) != 1 || containerPort(inference, svc.Spec.Ports[0].TargetPort.String()) != svc.Spec.Ports[0].Port {
		t.Errorf("the Service's ports %+v: want the inference container's gRPC port, same number", svc.Spec.Ports)
	}

	// Disruptions and autoscaling act on these pods.
	pdbSel, err := metav1.LabelSelectorAsSelector(m.pdb.Spec.Selector)
	if err != nil || !pdbSel.Matches(podLabels) {
		t.Errorf("the PDB's selector %v does not select the pods (%v)", m.pdb.Spec.Selector, err)
	}
	hpa := m.hpa
	if ref := hpa.Spec.ScaleTargetRef; ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
		t.Errorf("the HPA scales %+v, want Deployment %s", ref, d.Name)
	}
	minReplicas := int32(1)
	if hpa.Spec.MinReplicas != nil {
		minReplicas = *hpa.Spec.MinReplicas
	}
	if min := m.pdb.Spec.MinAvailable; min == nil || min.IntValue() >= int(minReplicas) || d.Spec.Replicas == nil || min.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("PDB minAvailable %v with %v replicas (HPA minimum %d): a drain could never evict a pod", min, d.Spec.Replicas, minReplicas)
	}
	if name := hpaMetric(t); name == "" {
		t.Error("the HPA's metric has no name")
	}
	if !strings.Contains(svc.Annotations["description"]+readFile(t, filepath.Join(k8sDir, "service.yaml")), `dns:///`+svc.Name) {
		t.Error("service.yaml does not show the client's dns:/// target")
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(b))
}

// containerPort is the number of the container's port named name (or name
// itself when it is a number).
func containerPort(c corev1.Container, name string) int32 {
	if n, err := strconv.Atoi(name); err == nil {
		return int32(n)
	}
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return -1
}

// TestPodLocal runs the pod's containers as processes on loopback, in the
// kubelet's order — the sidecar, its startup probe, then the inference
// container — with their commands and environments (ports and paths
// mapped, the Llama file replaced by the embedded model under its name),
// and sees every probe pass within its budget, a generation through the
// Service's port and the HPA's metric where the scrape annotations say.
func TestPodLocal(t *testing.T) {
	img := loadImage(t)
	m := loadManifests(t)
	pod := &m.deployment.Spec.Template.Spec
	l := newLocal(t)
	for _, v := range pod.Volumes {
		for _, c := range podContainers(pod) {
			for _, vm := range c.VolumeMounts {
				if vm.Name == v.Name {
					l.mount(vm.MountPath, "")
				}
			}
		}
	}
	loaderEnv := envMap(pod.InitContainers[0])
	for _, item := range strings.Split(loaderEnv["CORELM_LOADER_MODEL"], ",") {
		_, path, _ := strings.Cut(item, "=")
		local := l.rewrite(path)
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, models.Stories, 0o444); err != nil {
			t.Fatal(err)
		}
	}

	var inference *servicetest.Proc
	for _, c := range podContainers(pod) {
		probe := c.StartupProbe
		if probe == nil {
			probe = c.ReadinessProbe
		}
		addr := l.addr(strconv.Itoa(int(probe.GRPC.Port)))
		p := start(t, img.binary(t, c.Command[0]), c.Args, l.env(envMap(c)), addr)
		for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if pr == nil {
				continue
			}
			service := ""
			if pr.GRPC.Service != nil {
				service = *pr.GRPC.Service
			}
			servicetest.WaitStatus(t, p.Conn, service, healthpb.HealthCheckResponse_SERVING, min(probeWithin(pr), 2*time.Minute))
		}
		if c.Name == pod.Containers[0].Name {
			inference = p
		}
	}

	// Through the Service's port, the required models generate.
	svcPort := m.service.Spec.Ports[0]
	addr := l.addr(strconv.Itoa(int(containerPort(pod.Containers[0], svcPort.TargetPort.String()))))
	if addr != inference.Addr {
		t.Fatalf("the Service's target port maps to %s, the inference container serves %s", addr, inference.Addr)
	}
	client := corelmv1.NewInferenceServiceClient(inference.Conn)
	for _, id := range strings.Split(envMap(pod.Containers[0])["CORELM_REQUIRE_MODELS"], ",") {
		stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: id,
			Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}, MaxTokens: 8})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := servicetest.RecvAll(stream.Recv, func(r *corelmv1.GenerateResponse) {
			if r.GetToken() != nil {
				n++
			}
		}); err != nil || n == 0 {
			t.Errorf("model %s: %d tokens, %v", id, n, err)
		}
	}
	ann := m.deployment.Spec.Template.Annotations
	url := "http://" + l.addr(ann["prometheus.io/port"]) + ann["prometheus.io/path"]
	metric := hpaMetric(t)
	if _, n := servicetest.Scrape(t, url).Value(metric); n == 0 {
		t.Errorf("%s has no %s, the HPA's metric", url, metric)
	}
}
