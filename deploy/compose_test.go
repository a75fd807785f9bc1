package deploy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/corelm/corelm/internal/jaegertest"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/runtime"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// compose is the part of the Compose Specification docker-compose.yml
// uses; decoding is strict, so a field outside it (a typo, or one these
// tests do not check yet) fails.
type compose struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]struct {
		Driver     string            `json:"driver"`
		DriverOpts map[string]string `json:"driver_opts"`
	} `json:"volumes"`
}

type composeService struct {
	Build *struct {
		Context string            `json:"context"`
		Args    map[string]string `json:"args"`
	} `json:"build"`
	Image       string            `json:"image"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Volumes     []string          `json:"volumes"`
	Ports       []string          `json:"ports"`
	CPUs        float64           `json:"cpus"`
	MemLimit    string            `json:"mem_limit"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
}

// composeVar is an interpolation: ${NAME}, ${NAME:-default}.
var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)(?::-([^}]*))?\}`)

// readEnvFile reads KEY=VALUE lines (an .env file), skipping comments.
func readEnvFile(t *testing.T, name string) (vars map[string]string, order []string) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", name, line)
		}
		vars[k] = v
		order = append(order, k)
	}
	return vars, order
}

// loadCompose reads docker-compose.yml with its variables taken from env
// (as docker compose takes them from .env), checking that every variable
// it uses is in .env.example with the same default, and decodes it.
func loadCompose(t *testing.T, env map[string]string) *compose {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	example, _ := readEnvFile(t, "../.env.example")
	used := map[string]bool{}
	text := composeVar.ReplaceAllStringFunc(string(raw), func(m string) string {
		sm := composeVar.FindStringSubmatch(m)
		name, def := sm[1], sm[2]
		used[name] = true
		if ex, ok := example[name]; !ok {
			t.Errorf("docker-compose.yml uses ${%s}, which .env.example does not document", name)
		} else if ex != def {
			t.Errorf("${%s}: docker-compose.yml's default %q, .env.example's %q", name, def, ex)
		}
		if v, ok := env[name]; ok && v != "" {
			return v
		}
		return def
	})
	for name := range example {
		if !used[name] {
			t.Errorf(".env.example has %s, which docker-compose.yml does not use", name)
		}
	}
	var c compose
	if err := yaml.UnmarshalStrict([]byte(text), &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return &c
}

// mount is one short-syntax volume: SOURCE:TARGET[:ro].
type mount struct {
	source, target string
	readOnly       bool
}

func parseMount(t *testing.T, v string) mount {
	t.Helper()
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || len(parts) == 3 && parts[2] != "ro" {
		t.Fatalf("volume %q: want SOURCE:TARGET[:ro]", v)
	}
	return mount{parts[0], parts[1], len(parts) == 3}
}

// TestCompose checks docker-compose.yml against the image's binaries and
// the 6 GiB, 2 vCPU target.
func TestCompose(t *testing.T) {
	img := loadImage(t)
	example, _ := readEnvFile(t, "../.env.example")
	c := loadCompose(t, example)
	for _, name := range []string{"loader", "inference", "jaeger"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no %s service", name)
		}
	}
	var memory int64
	for name, s := range c.Services {
		where := "service " + name
		mem, err := runtime.ParseBytes(s.MemLimit)
		if err != nil {
			t.Errorf("%s: mem_limit %q: %v", where, s.MemLimit, err)
		}
		memory += mem
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published beyond loopback", where, p)
			}
		}
		if name == "jaeger" {
			continue
		}
		if s.CPUs != 2 {
			t.Errorf("%s: cpus %v, want 2", where, s.CPUs)
		}
		if s.Image != "corelm:dev" || len(s.Entrypoint) != 1 {
			t.Errorf("%s: image %q, entrypoint %q; want the corelm image and one of its binaries", where, s.Image, s.Entrypoint)
			continue
		}
		fl := img.flagsOf(t, s.Entrypoint[0])
		fl.checkEnv(t, where, s.Environment)
		fl.checkArgs(t, where, s.Command)
		// Every published port is one the service listens on.
		listens := map[string]bool{}
		for k, v := range s.Environment {
			if strings.HasSuffix(k, "LISTEN") {
				_, port, _ := strings.Cut(v, ":")
				listens[port] = true
			}
		}
		for _, p := range s.Ports {
			if container := p[strings.LastIndex(p, ":")+1:]; !listens[container] {
				t.Errorf("%s: publishes %s, on which it does not listen (%v)", where, p, s.Environment)
			}
		}
		hc := s.Healthcheck
		if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[2] != "health" {
			t.Errorf("%s: healthcheck %v, want [CMD /usr/local/bin/corelm health ADDR ...]", where, hc)
			continue
		}
		img.flagsOf(t, hc.Test[1], "health").checkArgs(t, where+" healthcheck", hc.Test[3:])
		if i := slices.Index(hc.Test, "--timeout"); i < 0 || i+1 == len(hc.Test) || composeDuration(t, hc.Test[i+1]) >= composeDuration(t, hc.Timeout) {
			t.Errorf("%s: the health check's --timeout must be given and shorter than the engine's timeout %s: %v", where, hc.Timeout, hc.Test)
		}
		_, hport, _ := strings.Cut(hc.Test[3], ":")
		if !listens[hport] {
			t.Errorf("%s: the health check asks %s, where nothing listens", where, hc.Test[3])
		}
	}
	if memory != 6<<30 {
		t.Errorf("memory limits add up to %d MiB, want the 6144 MiB target", memory>>20)
	}

	loader, inference := c.Services["loader"], c.Services["inference"]
	shmSize, err := runtime.ParseBytes(example["CORELM_SHM_SIZE"])
	if err != nil {
		t.Fatal(err)
	}
	if opts := c.Volumes["shm"].DriverOpts; opts["type"] != "tmpfs" || !strings.Contains(opts["o"], "size="+example["CORELM_SHM_SIZE"]+",") {
		t.Errorf("volume shm %v: want a tmpfs of CORELM_SHM_SIZE", opts)
	}
	if budget, _ := runtime.ParseBytes(loader.Environment["CORELM_LOADER_BUDGET"]); budget != shmSize {
		t.Errorf("the loader's budget %d, the tmpfs %d: want them equal", budget, shmSize)
	}
	inferenceLimit, _ := runtime.ParseBytes(inference.MemLimit)
	checkMemoryBudget(t, inference.Environment["CORELM_MEMORY_BUDGET"], shmSize, inferenceLimit)
	// The tmpfs pages are charged to the loader, which writes them.
	if lm, _ := runtime.ParseBytes(loader.MemLimit); lm < shmSize+256<<20 {
		t.Errorf("the loader's limit %d MiB holds the tmpfs (%d MiB) and less than 256 MiB of its own", lm>>20, shmSize>>20)
	}
	// The shared volume: where the loader publishes, read-only in the
	// inference service at the same path (files are announced by path).
	var loaderShm, inferenceShm mount
	for _, v := range loader.Volumes {
		if m := parseMount(t, v); m.source == "shm" {
			loaderShm = m
		}
	}
	for _, v := range inference.Volumes {
		if m := parseMount(t, v); m.source == "shm" {
			inferenceShm = m
		}
	}
	if loaderShm.target == "" || loaderShm.target != loader.Environment["CORELM_LOADER_SHM_DIR"] || loaderShm.readOnly ||
		inferenceShm.target != loaderShm.target || !inferenceShm.readOnly {
		t.Errorf("shm mounts: loader %+v (shm dir %s), inference %+v; want the same path, read-only in inference",
			loaderShm, loader.Environment["CORELM_LOADER_SHM_DIR"], inferenceShm)
	}
	if inference.DependsOn["loader"].Condition != "service_healthy" {
		t.Errorf("inference depends on the loader %+v, want condition service_healthy", inference.DependsOn["loader"])
	}
}

// TestComposeLocal runs the compose stack's loader and inference service as
// processes, with their own entrypoints, environments and health checks
// (from .env.example's settings; container ports and host names mapped to
// loopback, volumes to temporary directories, the Llama file replaced by
// the embedded stories model under its name), in depends_on order, and
// checks that they turn healthy, serve a generation and export to Jaeger
// (when the pinned Jaeger is built; else its endpoint is a closed port).
func TestComposeLocal(t *testing.T) {
	img := loadImage(t)
	example, _ := readEnvFile(t, "../.env.example")
	c := loadCompose(t, example)
	l := newLocal(t, keys(c.Services)...)
	var jaeger *jaegertest.Jaeger
	if bin, err := jaegertest.Binary(); err == nil && fileExists(bin) {
		jaeger = jaegertest.Start(t)
		_, port, _ := strings.Cut(strings.TrimPrefix(jaeger.OTLPEndpoint(), "http://"), ":")
		l.ports["4317"] = port
	} else {
		t.Log("no pinned Jaeger built: the OTLP endpoint is a closed port")
	}

	// Volumes: a named one is one temporary directory wherever it is
	// mounted, a bind mount a temporary directory of its own; the models
	// directory gets the embedded model under each file name the models
	// variable gives.
	named := map[string]string{}
	for _, name := range []string{"loader", "inference"} {
		for _, v := range c.Services[name].Volumes {
			m := parseMount(t, v)
			dir := ""
			if !strings.ContainsAny(m.source[:1], "./$~") {
				if named[m.source] == "" {
					named[m.source] = t.TempDir()
				}
				dir = named[m.source]
			}
			if got := l.mount(m.target, dir); dir != "" && got != dir {
				t.Fatalf("%s mounted from two sources", m.target)
			}
		}
	}
	var ids []string
	for _, item := range strings.Split(c.Services["loader"].Environment["CORELM_LOADER_MODEL"], ",") {
		id, path, _ := strings.Cut(item, "=")
		ids = append(ids, id)
		local := l.rewrite(path)
		if local == path {
			t.Fatalf("model %s=%s is not in a mounted volume", id, path)
		}
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, models.Stories, 0o444); err != nil {
			t.Fatal(err)
		}
	}

	procs := map[string]*servicetest.Proc{}
	for _, name := range []string{"loader", "inference"} { // depends_on order, checked by TestCompose
		s := c.Services[name]
		hc := s.Healthcheck
		addr := l.rewrite(hc.Test[3])
		procs[name] = start(t, img.binary(t, s.Entrypoint[0]), nil, l.env(s.Environment), addr)
		// The engine's wait: start_period, then retries × interval.
		within := composeDuration(t, hc.StartPeriod) + time.Duration(hc.Retries)*composeDuration(t, hc.Interval)
		args := make([]string, len(hc.Test)-2)
		for i, a := range hc.Test[2:] {
			args[i] = l.rewrite(a)
		}
		waitCommand(t, min(within, 2*time.Minute), 50*time.Millisecond, img.binary(t, hc.Test[1]), args...)
	}

	// The models are served: a greedy generation on each is the embedded
	// model's.
	inf := procs["inference"]
	client := corelmv1.NewInferenceServiceClient(inf.Conn)
	_, want, _ := servicetest.Greedy(t, "Once upon a time", 16)
	for _, id := range ids {
		temp := float32(0)
		stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: id,
			Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}, MaxTokens: 16, Sampling: &corelmv1.SamplingParams{Temperature: &temp}})
		if err != nil {
			t.Fatal(err)
		}
		var got []int32
		err = servicetest.RecvAll(stream.Recv, func(r *corelmv1.GenerateResponse) {
			if tok := r.GetToken(); tok != nil {
				got = append(got, tok.GetId())
			}
		})
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("model %s: generated %v (%v), want %v", id, got, err, want)
		}
	}
	// The published metrics port serves the metric the HPA scales on.
	metric := hpaMetric(t)
	for _, p := range c.Services["inference"].Ports {
		container := p[strings.LastIndex(p, ":")+1:]
		if container == "7071" {
			continue
		}
		m := servicetest.Scrape(t, "http://"+l.addr(container)+"/metrics")
		if _, n := m.Value(metric); n == 0 {
			t.Errorf("http://%s/metrics (published %s) has no %s", l.addr(container), p, metric)
		}
	}
	for _, name := range []string{"inference", "loader"} {
		procs[name].Stop(t) // flushes their spans
	}
	if jaeger != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, svc := range []string{"corelm-loader", "corelm-inference"} {
			if _, err := jaeger.Traces(ctx, svc, 1); err != nil {
				t.Errorf("Jaeger has no traces of %s: %v", svc, err)
			}
		}
	}
}

// composeDuration parses a compose duration ("5s", "10m").
func composeDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestEnvExample: every variable of .env.example is documented by a comment
// above it or its group, so that the file explains itself.
func TestEnvExample(t *testing.T) {
	raw, err := os.ReadFile("../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	var commented bool
	for i, line := range bytes.Split(raw, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("#")):
			commented = true
		case len(bytes.TrimSpace(line)) == 0:
			commented = false
		case !commented:
			t.Errorf(".env.example:%d: %s has no comment above its group", i+1, line)
		}
	}
}

// checkMemoryBudget checks the inference service's memory budget in a
// deployment where the weights live in a shared tmpfs of size shm, whose
// pages are charged to the loader: the budget counts the weights, so it
// must hold the tmpfs, and beyond the weights it must leave the container
// (limit) 256 MiB for what the budget does not count (the Go runtime).
func checkMemoryBudget(t *testing.T, value string, shm, limit int64) {
	t.Helper()
	budget, err := runtime.ParseBytes(value)
	if err != nil {
		t.Errorf("the inference memory budget %q: %v (auto would be the container's limit, which the weights are not charged to)", value, err)
		return
	}
	if budget < shm || budget-shm > limit-256<<20 {
		t.Errorf("the inference memory budget %d MiB: want at least the tmpfs (%d MiB) and at most the tmpfs plus the inference limit (%d MiB) less 256 MiB",
			budget>>20, shm>>20, limit>>20)
	}
}
