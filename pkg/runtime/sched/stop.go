package sched

import (
	"slices"
	"strings"
)

// The conditions that end a generation, other than stop strings (below),
// cancellation and errors. The scheduler's token loop is the only one in
// corelm (runtime.Generate runs through it), so these are the only copy.

// stopsAt reports whether tok ends the generation without being emitted: an
// end-of-generation token of the vocabulary or one of the request's stop
// tokens (FinishStop).
func (req *Request) stopsAt(tok int32) bool {
	return (req.IsEOG != nil && req.IsEOG(tok)) || slices.Contains(req.StopTokens, tok)
}

// lengthReached reports whether a sequence that has emitted gen tokens and
// consumed pos positions of a cache of length must stop (FinishLength): it
// has its max_tokens, or no room is left for the token just emitted.
func (req *Request) lengthReached(gen, pos, length int) bool {
	return (req.MaxTokens > 0 && gen >= req.MaxTokens) || pos+1 >= length
}

// stopMatcher finds stop strings in streamed text. It holds back the
// shortest tail of the text that could still grow into a stop string, so a
// client never sees part of one (llama.cpp's server does the same).
type stopMatcher struct {
	stops   []string
	pending string
}

// push adds a piece of text and returns the text that is safe to emit.
// When a stop string appears, matched is it and out is the text before it.
func (m *stopMatcher) push(piece string) (out, matched string) {
	if len(m.stops) == 0 {
		return piece, ""
	}
	m.pending += piece
	first, which := -1, ""
	for _, s := range m.stops {
		if i := strings.Index(m.pending, s); i >= 0 && (first < 0 || i < first) {
			first, which = i, s
		}
	}
	if first >= 0 {
		out = m.pending[:first]
		m.pending = ""
		return out, which
	}
	hold := 0
	for _, s := range m.stops {
		hold = max(hold, partialSuffix(m.pending, s))
	}
	out = m.pending[:len(m.pending)-hold]
	m.pending = m.pending[len(m.pending)-hold:]
	return out, ""
}

// flush returns the held-back text at the end of a generation.
func (m *stopMatcher) flush() string {
	out := m.pending
	m.pending = ""
	return out
}

// partialSuffix is the length of the longest proper prefix of stop that text
// ends with.
func partialSuffix(text, stop string) int {
	for n := min(len(stop)-1, len(text)); n > 0; n-- {
		if strings.HasSuffix(text, stop[:n]) {
			return n
		}
	}
	return 0
}
