package deploy

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const gatewayDir = "k8s/gateway"

// TestKubernetesGateway checks the gateway overlay (deploy/k8s/gateway):
// the base plus a gateway Deployment and Service, its variables and port
// against the gateway binary, HTTP probes on /healthz and /readyz, the
// inference target naming the base's headless Service, and a grace that
// fits the pod's. It then runs the binary with the container's environment
// and asks the probes' paths.
func TestKubernetesGateway(t *testing.T) {
	img := loadImage(t)
	base := loadManifests(t)
	var k kustomization
	raw, err := os.ReadFile(filepath.Join(gatewayDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if !slices.Contains(k.Resources, "../") || !slices.Contains(k.Resources, "gateway.yaml") {
		t.Errorf("the overlay's resources %v: want the base (../) and gateway.yaml", k.Resources)
	}
	var d *appsv1.Deployment
	var svc *corev1.Service
	raw, err = os.ReadFile(filepath.Join(gatewayDir, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			d = &appsv1.Deployment{}
			obj = d
		case "v1 Service":
			svc = &corev1.Service{}
			obj = svc
		default:
			t.Fatalf("gateway.yaml, document %d: unexpected %s %s", i+1, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("gateway.yaml, document %d: %v", i+1, err)
		}
	}
	if d == nil || svc == nil {
		t.Fatal("gateway.yaml needs a Deployment and a Service")
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("the Deployment's selector does not match its pods (%v)", err)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("the Service's selector %v does not select the gateway pods %v", svc.Spec.Selector, podLabels)
	}
	inferencePods := labels.Set(base.deployment.Spec.Template.Labels)
	if labels.SelectorFromSet(svc.Spec.Selector).Matches(inferencePods) ||
		labels.SelectorFromSet(base.service.Spec.Selector).Matches(podLabels) {
		t.Error("the gateway's and the inference pods' Services select each other's pods")
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/gateway" {
		t.Fatalf("command %q, want the image's gateway", c.Command)
	}
	env := envMap(c)
	fl := img.flagsOf(t, c.Command[0])
	fl.checkEnv(t, "container gateway", env)
	fl.checkArgs(t, "container gateway", c.Args)
	port := containerPort(c, "http")
	if !listenPorts(env)[port] || port == 0 {
		t.Errorf("port http %d is not the one it listens on (%s)", port, env["CORELM_GATEWAY_LISTEN"])
	}
	if len(svc.Spec.Ports) != 1 || containerPort(c, svc.Spec.Ports[0].TargetPort.String()) != port {
		t.Errorf("the Service's ports %+v: want the gateway's http port", svc.Spec.Ports)
	}
	want := "dns:///" + base.service.Name + ":" + itoa(base.service.Spec.Ports[0].Port)
	if got := env["CORELM_GATEWAY_INFERENCE"]; got != want {
		t.Errorf("CORELM_GATEWAY_INFERENCE %q, want the headless Service %q", got, want)
	}
	if req, lim := c.Resources.Requests, c.Resources.Limits; lim.Memory().IsZero() || !req.Memory().Equal(*lim.Memory()) {
		t.Errorf("memory request %v, limit %v; want them equal", req.Memory(), lim.Memory())
	}
	if grace, err := time.ParseDuration(env["CORELM_GATEWAY_SHUTDOWN_GRACE"]); err != nil ||
		pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= grace+5*time.Second {
		t.Errorf("shutdown grace %v (%v) must fit in the pod's termination grace %v", grace, err, pod.TerminationGracePeriodSeconds)
	}
	probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	for kind, p := range probes {
		if p == nil || p.HTTPGet == nil || containerPort(c, p.HTTPGet.Port.String()) != port {
			t.Fatalf("%s probe %+v: want an HTTP probe on the http port", kind, p)
		}
	}

	// The binary with the container's environment (the port and the
	// inference target on loopback, where nothing serves): alive, not ready.
	l := newLocal(t)
	local := map[string]string{}
	for k, v := range env {
		local[k] = v
	}
	local["CORELM_GATEWAY_INFERENCE"] = "127.0.0.1:1"
	addr := l.addr(itoa(port))
	start(t, img.binary(t, c.Command[0]), c.Args, l.env(local), addr)
	for path, status := range map[string]int{c.LivenessProbe.HTTPGet.Path: 200, c.ReadinessProbe.HTTPGet.Path: 503} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, status)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
