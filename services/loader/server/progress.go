package server

import (
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// progressLogEvery is how often a load in progress is logged.
const progressLogEvery = 5 * time.Second

// meter turns one load's byte counts into a rate and a time left, for the
// LoadModel stream and the log. Packing is the long stage (it reads the
// whole source and writes the whole packed file), so the rate is the
// packing rate since packing began.
type meter struct {
	log     *slog.Logger
	id      string
	gen     uint64
	now     func() time.Time
	packing time.Time // the first PACKING report
	logged  time.Time // the last progress log line, or the first report
}

func newMeter(log *slog.Logger, id string, gen uint64) *meter {
	return &meter{log: log, id: id, gen: gen, now: time.Now}
}

// measure fills msg's rate and ETA and logs progress every
// progressLogEvery. Only its load's reports call it, one at a time.
func (m *meter) measure(msg *corelmv1.LoadModelResponse) {
	now := m.now()
	if msg.GetStage() == corelmv1.LoadStage_LOAD_STAGE_PACKING {
		if m.packing.IsZero() {
			m.packing = now
		}
		if elapsed := now.Sub(m.packing).Seconds(); elapsed > 0 && msg.GetBytesDone() > 0 {
			rate := float64(msg.GetBytesDone()) / elapsed
			msg.BytesPerSecond = rate
			left := float64(msg.GetBytesTotal()-msg.GetBytesDone()) / rate
			msg.Eta = durationpb.New(time.Duration(left * float64(time.Second)).Round(time.Millisecond))
		}
	}
	if m.logged.IsZero() {
		m.logged = now // the first report: the load has just begun
	}
	if now.Sub(m.logged) < progressLogEvery {
		return
	}
	m.logged = now
	attrs := []any{"model", m.id, "generation", m.gen, "stage", stageName(msg.GetStage())}
	if msg.GetBytesTotal() > 0 {
		attrs = append(attrs, "bytes_done", msg.GetBytesDone(), "bytes_total", msg.GetBytesTotal(),
			"percent", int(100*msg.GetBytesDone()/msg.GetBytesTotal()))
	}
	if msg.GetBytesPerSecond() > 0 {
		attrs = append(attrs, "bytes_per_second", int64(msg.GetBytesPerSecond()), "eta", msg.GetEta().AsDuration())
	}
	m.log.Info("loading", attrs...)
}

// stageName is a LoadStage as a word: "packing".
func stageName(s corelmv1.LoadStage) string {
	switch s {
	case corelmv1.LoadStage_LOAD_STAGE_VALIDATING:
		return "validating"
	case corelmv1.LoadStage_LOAD_STAGE_PACKING:
		return "packing"
	case corelmv1.LoadStage_LOAD_STAGE_PUBLISHING:
		return "publishing"
	case corelmv1.LoadStage_LOAD_STAGE_READY:
		return "ready"
	}
	return s.String()
}
