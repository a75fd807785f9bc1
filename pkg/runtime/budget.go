package runtime

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/model"
)

// ComputeBytes estimates the activation memory of one forward step of up to
// chunk tokens (the workspace of the forward pass plus one logits row per
// token), which comes on top of weights and KV cache.
func ComputeBytes(cfg *model.Config, chunk int) int64 {
	perTok := 3*cfg.Dim + 2*cfg.QDim() + 2*cfg.KVDim() + 2*cfg.FFN
	act := int64(chunk) * int64(perTok) * 4
	// Activations quantized to 8 bits for the matmuls, and the logits.
	q8 := int64(chunk) * int64(max(cfg.Dim, cfg.FFN)+64)
	logits := int64(cfg.Vocab) * 4 * 2
	return act + q8 + logits
}

// ParseBytes parses a size such as "6GiB", "512MiB", "6G", "1.5GB" or
// "1048576". Binary (KiB, MiB, GiB, K, M, G) and decimal (KB, MB, GB)
// suffixes are accepted.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("invalid size %q (examples: 6GiB, 512MiB, 1073741824)", s)
	}
	return int64(f * mult), nil
}
