package kernels

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

// goldenInput is a fixed, generator-independent input (xorshift64, no
// math/rand, whose streams may change between Go releases) with one kind of
// data per 256-element super-block: small symmetric, heavy-tailed,
// llama.cpp's 0.1+2cos(i), all positive, zero sub-blocks, all negative.
func goldenInput(n int) []float32 {
	x := make([]float32, n)
	s := uint64(0x9e3779b97f4a7c15)
	next := func() float64 {
		s ^= s << 13
		s ^= s >> 7
		s ^= s << 17
		return float64(s>>11) / (1 << 53)
	}
	for i := range x {
		u := next()
		switch i / 256 % 6 {
		case 0:
			x[i] = float32((u - 0.5) * 0.04)
		case 1:
			x[i] = float32(math.Tan((u-0.5)*3) * 0.01)
		case 2:
			x[i] = float32(0.1 + 2*math.Cos(float64(i)))
		case 3:
			x[i] = float32(u + 0.5)
		case 4:
			if i/32%2 == 1 {
				x[i] = float32(u*2 - 1)
			}
		case 5:
			x[i] = -float32(u*u) * 3
		}
	}
	return x
}

// TestQuantizeGolden pins the exact bytes Quantize writes and the exact
// float DotQ returns for every type. When recorded, these matched ggml's
// quantize_row_*_ref and ggml_vec_dot_*_generic bit for bit (built with
// -ffp-contract=off on amd64), so a change here means corelm-written files or
// dots now differ from llama.cpp's: only rewrite with -update when that is
// intended. Other architectures may fuse multiply-adds (Go allows it), which
// moves last bits, so the comparison runs on amd64 only. The dots are those
// of the reference kernels (the generic tier): the assembly tiers follow
// ggml's AVX2 float order instead and are pinned to it by
// TestFastDotExact.
func TestQuantizeGolden(t *testing.T) {
	if runtime.GOARCH != "amd64" && !*update {
		t.Skip("golden bits are recorded on amd64, where Go never fuses multiply-adds")
	}
	useTier(t, genericKernels)
	const n, rowLen = 256 * 24, 1536
	x := goldenInput(n)
	act := make([]float32, n)
	for i := range act {
		act[i] = x[n-1-i] * 1.7
	}
	var lines []string
	for _, typ := range []DType{F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K} {
		b := quantize(typ, x)
		sum := sha256.Sum256(b)
		line := fmt.Sprintf("%v %s", typ, hex.EncodeToString(sum[:]))
		if typ != Q8_1 && typ != Q8_K {
			vt := VecDotType(typ)
			xq := quantize(vt, act)
			wrb, _ := typ.RowBytes(rowLen)
			xrb, _ := vt.RowBytes(rowLen)
			var dots []string
			for r := range n / rowLen {
				d := DotQ(typ, rowLen, b[r*wrb:(r+1)*wrb], xq[r*xrb:(r+1)*xrb])
				dots = append(dots, fmt.Sprintf("%08x", math.Float32bits(d)))
			}
			line += " dots=" + strings.Join(dots, ",")
		}
		lines = append(lines, line)
	}
	got := strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", "quantize.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	wantLines := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(want)))
	for sc.Scan() {
		if name, rest, ok := strings.Cut(sc.Text(), " "); ok {
			wantLines[name] = rest
		}
	}
	for _, l := range lines {
		name, rest, _ := strings.Cut(l, " ")
		if wantLines[name] != rest {
			t.Errorf("%s: got  %s\n\twant %s", name, rest, wantLines[name])
		}
	}
}
