package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// embedLine is one output line of corelm embed.
type embedLine struct {
	Index     int       `json:"index"`
	Tokens    int       `json:"tokens"`
	Embedding []float32 `json:"embedding"`
}

var poolings = map[string]model.Pooling{"": model.PoolNone, "mean": model.PoolMean, "last": model.PoolLast, "cls": model.PoolCLS}

func runEmbed(ctx context.Context, args []string) error {
	fs := newFlags("embed")
	var rf remoteFlags
	modelPath := fs.String("model", "", "model file (default: the embedded "+models.Name+"); with --server, the model id (default: the one the server serves)")
	pooling := fs.String("pooling", "", "mean, last or cls (default: the model's pooling_type, else mean)")
	raw := fs.Bool("no-normalize", false, "print the pooled vectors as they are, not scaled to unit length")
	threads := fs.Int("threads", 0, "threads (default: the CPUs this process may use)")
	rf.bind(fs, 5*time.Minute)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	texts := fs.Args()
	p, ok := poolings[*pooling]
	if len(texts) == 0 || !ok {
		return usagef("usage: corelm embed [--model MODEL | --server ADDR [--model ID]] [--pooling mean|last|cls] [--no-normalize] TEXT...")
	}
	if err := rf.check(fs); err != nil {
		return err
	}
	var lines []embedLine
	var err error
	if rf.server != "" {
		lines, err = embedRemote(ctx, &rf, *modelPath, texts, p, !*raw)
	} else {
		lines, err = embedLocal(ctx, *modelPath, *threads, texts, p, !*raw)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}

// embedLocal embeds texts with the model at path through a scheduler, as
// the inference service's Embed does.
func embedLocal(ctx context.Context, path string, threads int, texts []string, p model.Pooling, normalize bool) ([]embedLine, error) {
	l, err := openModel(path, threads)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	tok, err := tokenizer.New(l.Source)
	if err != nil {
		return nil, err
	}
	if p == model.PoolNone {
		p = l.Model.Config().Pooling.Embedding()
	}
	s := sched.New(l.Model, sched.Config{MaxSeqs: 1})
	defer s.Shutdown(context.Background())
	var lines []embedLine
	for i, text := range texts {
		ids, err := tok.Encode(text, tokenizer.EncodeOptions{})
		if err != nil {
			return nil, err
		}
		h, err := s.Submit(ctx, sched.Request{Prompt: ids, Pooling: p})
		if err != nil {
			return nil, fmt.Errorf("text %d: %w", i+1, err)
		}
		for {
			ev, err := h.Recv(context.Background())
			if err != nil {
				return nil, err
			}
			if ev.Kind != sched.EventFinal {
				continue
			}
			if ev.Final.Reason != sched.FinishStop {
				return nil, errors.Join(ev.Final.Err, ctx.Err())
			}
			v := ev.Final.Embedding
			if normalize {
				sched.Normalize(v)
			}
			lines = append(lines, embedLine{Index: i, Tokens: len(ids), Embedding: v})
			break
		}
	}
	return lines, nil
}

// embedRemote embeds texts with one Embed call on the server of rf.
func embedRemote(ctx context.Context, rf *remoteFlags, id string, texts []string, p model.Pooling, normalize bool) ([]embedLine, error) {
	req := &corelmv1.EmbedRequest{ModelId: id, Normalize: &normalize,
		Pooling: map[model.Pooling]corelmv1.Pooling{model.PoolMean: corelmv1.Pooling_POOLING_MEAN,
			model.PoolLast: corelmv1.Pooling_POOLING_LAST, model.PoolCLS: corelmv1.Pooling_POOLING_CLS}[p]}
	for _, t := range texts {
		req.Inputs = append(req.Inputs, &corelmv1.EmbedInput{Input: &corelmv1.EmbedInput_Text{Text: t}})
	}
	resp, err := callModel(ctx, rf, &req.ModelId, func(ctx context.Context, r *remote) (*corelmv1.EmbedResponse, error) {
		return r.client.Embed(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	var lines []embedLine
	for i, e := range resp.GetEmbeddings() {
		lines = append(lines, embedLine{Index: i, Tokens: int(e.GetTokens()), Embedding: e.GetValues()})
	}
	return lines, nil
}
