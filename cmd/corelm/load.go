package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/corelm/corelm/pkg/runtime"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// loaderTokenEnv is the loader's bearer token, as the loader and the
// inference service read it.
const loaderTokenEnv = "CORELM_LOADER_AUTH_TOKEN"

// runLoad asks a loader to load (or reload) a model and shows the load's
// progress: `corelm load --server LOADER ID [PATH] [--reload]`. On a
// terminal the progress is one bar redrawn in place; elsewhere (a log, a
// pipe) a line per stage and per tenth of the file.
func runLoad(ctx context.Context, args []string) error {
	fs := newFlags("load")
	rf := remoteFlags{tokenEnv: loaderTokenEnv}
	rf.bind(fs, 0)
	reload := fs.Bool("reload", false, "publish a new generation even if the same file is already published")
	ctxLen := fs.Int("ctx", 0, "the context the model is served with (0: the inference service's choice)")
	kvType := fs.String("kv-type", "", "the KV cache type it is served with: f16 or q8_0 (empty: the service's)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if rf.server == "" || fs.NArg() < 1 || fs.NArg() > 2 {
		return usagef("usage: corelm load --server LOADER_ADDR MODEL_ID [PATH] [--reload] [--ctx N] [--kv-type T]")
	}
	opts := &corelmv1.LoadOptions{Context: int32(*ctxLen)}
	if *kvType != "" {
		v, ok := corelmv1.KVType_value["KV_TYPE_"+strings.ToUpper(*kvType)]
		if !ok {
			return usagef("--kv-type %q: want f16 or q8_0", *kvType)
		}
		opts.KvType = corelmv1.KVType(v)
	}
	r, err := rf.connect()
	if err != nil {
		return err
	}
	defer r.Close()
	callCtx, cancel := r.call(ctx)
	defer cancel()
	stream, err := corelmv1.NewLoaderServiceClient(r.conn).LoadModel(callCtx, &corelmv1.LoadModelRequest{
		ModelId: fs.Arg(0), Path: fs.Arg(1), Options: opts, Reload: *reload,
	})
	if err != nil {
		return r.callError(ctx, "", err)
	}
	bar := newProgress(os.Stderr, isTerminal(os.Stderr))
	start := time.Now()
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			bar.done()
			return fmt.Errorf("the loader ended the load of %q without publishing it", fs.Arg(0))
		}
		if err != nil {
			bar.done()
			return r.callError(ctx, "", err)
		}
		bar.update(resp)
		if m := resp.GetModel(); resp.GetStage() == corelmv1.LoadStage_LOAD_STAGE_READY && m != nil {
			bar.done()
			if resp.GetReused() {
				fmt.Printf("%s: already published generation %d, %s (%s)\n", m.GetModelId(), m.GetGeneration(), m.GetPath(), runtime.FormatBytes(m.GetSizeBytes()))
				return nil
			}
			took := time.Since(start)
			fmt.Printf("%s: published generation %d, %s (%s in %s, %s/s)\n", m.GetModelId(), m.GetGeneration(), m.GetPath(),
				runtime.FormatBytes(m.GetSizeBytes()), took.Round(10*time.Millisecond), runtime.FormatBytes(int64(float64(m.GetSizeBytes())/took.Seconds())))
			return nil
		}
	}
}

// progress draws a load's progress.
type progress struct {
	w        io.Writer
	tty      bool
	stage    corelmv1.LoadStage
	tenth    int64 // last tenth of the file reported (not a terminal)
	drawn    bool
	lastDraw time.Time
}

func newProgress(w io.Writer, tty bool) *progress { return &progress{w: w, tty: tty, tenth: -1} }

func (p *progress) update(r *corelmv1.LoadModelResponse) {
	stage := strings.ToLower(strings.TrimPrefix(r.GetStage().String(), "LOAD_STAGE_"))
	if !p.tty {
		if r.GetStage() != p.stage {
			p.stage = r.GetStage()
			fmt.Fprintf(p.w, "%s\n", stage)
		}
		if total := r.GetBytesTotal(); total > 0 && r.GetStage() == corelmv1.LoadStage_LOAD_STAGE_PACKING {
			if tenth := 10 * r.GetBytesDone() / total; tenth > p.tenth {
				p.tenth = tenth
				fmt.Fprintf(p.w, "%s\n", progressLine(r))
			}
		}
		return
	}
	// Redraw at most ten times a second, and always on a stage change.
	if r.GetStage() == p.stage && time.Since(p.lastDraw) < 100*time.Millisecond {
		return
	}
	p.stage, p.lastDraw, p.drawn = r.GetStage(), time.Now(), true
	line := stage
	if r.GetBytesTotal() > 0 {
		line = fmt.Sprintf("%-10s %s", stage, progressLine(r))
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

// done ends the bar's line.
func (p *progress) done() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// progressLine is "[#####.....]  52%  2.4 GiB / 4.6 GiB  310 MiB/s  ETA 7s".
func progressLine(r *corelmv1.LoadModelResponse) string {
	const width = 30
	done, total := r.GetBytesDone(), r.GetBytesTotal()
	frac := min(max(float64(done)/float64(total), 0), 1)
	n := int(frac * width)
	s := fmt.Sprintf("[%s%s] %3.0f%%  %s / %s", strings.Repeat("#", n), strings.Repeat(".", width-n), 100*frac,
		runtime.FormatBytes(done), runtime.FormatBytes(total))
	if bps := r.GetBytesPerSecond(); bps > 0 {
		s += fmt.Sprintf("  %s/s", runtime.FormatBytes(int64(bps)))
	}
	if eta := r.GetEta(); eta != nil {
		s += fmt.Sprintf("  ETA %s", eta.AsDuration().Round(time.Second))
	}
	return s
}
