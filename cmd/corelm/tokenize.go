package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// vocabFile is a model's metadata opened for its tokenizer alone: no
// weights are loaded, so vocab-only GGUF files work too.
type vocabFile struct {
	*gguf.File
	tok *tokenizer.Tokenizer
}

// openVocab opens path (or the embedded demo model when path is empty or
// names it) and builds its tokenizer.
func openVocab(path string) (*vocabFile, error) {
	var f *gguf.File
	var err error
	if path == "" || models.IsName(path) {
		if _, statErr := os.Stat(path); path == "" || statErr != nil {
			f, err = gguf.Parse(models.Stories)
		} else {
			f, err = gguf.Open(path)
		}
	} else {
		f, err = gguf.Open(path)
	}
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.New(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &vocabFile{File: f, tok: tok}, nil
}

func runTokenize(ctx context.Context, args []string) error {
	fs := newFlags("tokenize")
	var rf remoteFlags
	modelPath := fs.String("model", "", "GGUF model or vocabulary file (default: the embedded "+models.Name+"); with --server, the model id (default: the one the server serves)")
	text := fs.String("text", "", "text to tokenize, exactly as given")
	file := fs.String("file", "", "file whose bytes to tokenize (- for standard input)")
	noBOS := fs.Bool("no-bos", false, "do not add BOS (or EOS) even if the model asks for it")
	special := fs.Bool("special", false, "recognise control tokens such as <|im_start|> written in the text")
	pieces := fs.Bool("pieces", false, "print one token per line with its text")
	rf.bind(fs, 30*time.Second)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if setFlags(fs)["text"] == (*file != "") || fs.NArg() != 0 {
		return usagef("usage: corelm tokenize [--model MODEL | --server ADDR [--model ID]] (--text TEXT | --file F) [--no-bos] [--special] [--pieces]")
	}
	if err := rf.check(fs); err != nil {
		return err
	}
	input := *text
	if *file != "" {
		var b []byte
		var err error
		if *file == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(*file)
		}
		if err != nil {
			return err
		}
		input = string(b)
	}
	var ids []int32
	var piece func(i int) []byte
	if rf.server != "" {
		req := &corelmv1.TokenizeRequest{ModelId: *modelPath, Text: input, ParseSpecial: *special}
		if *noBOS {
			req.AddBos = new(bool)
		}
		resp, err := tokenizeRemote(ctx, &rf, req)
		if err != nil {
			return err
		}
		ids, piece = resp.GetIds(), func(i int) []byte { return resp.GetPieces()[i] }
	} else {
		vf, err := openVocab(*modelPath)
		if err != nil {
			return err
		}
		defer vf.Close()
		opts := tokenizer.EncodeOptions{ParseSpecial: *special}
		if *noBOS {
			opts.AddBOS = tokenizer.BOSNone
		}
		if ids, err = vf.tok.Encode(input, opts); err != nil {
			return err
		}
		piece = func(i int) []byte { return vf.tok.TokenBytes(ids[i]) }
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	if *pieces {
		for i, id := range ids {
			fmt.Fprintf(w, "%d\t%s\n", id, strconv.Quote(string(piece(i))))
		}
		return nil
	}
	for i, id := range ids {
		if i > 0 {
			w.WriteByte(' ')
		}
		w.WriteString(strconv.Itoa(int(id)))
	}
	w.WriteByte('\n')
	return nil
}

func runDetokenize(ctx context.Context, args []string) error {
	fs := newFlags("detokenize")
	var rf remoteFlags
	modelPath := fs.String("model", "", "GGUF model or vocabulary file (default: the embedded "+models.Name+"); with --server, the model id (default: the one the server serves)")
	idList := fs.String("ids", "", `token ids, e.g. "1 15043 3186" (commas and brackets are fine too)`)
	rf.bind(fs, 30*time.Second)
	if err := fs.parse(args, 0, "usage: corelm detokenize [--model MODEL | --server ADDR [--model ID]] --ids \"1 2 3\""); err != nil {
		return err
	}
	if err := rf.check(fs); err != nil {
		return err
	}
	ids, err := parseTokenIDs(*idList)
	if err != nil {
		return usagef("--ids: %v", err)
	}
	if rf.server != "" {
		text, err := detokenizeRemote(ctx, &rf, &corelmv1.DetokenizeRequest{ModelId: *modelPath, Ids: ids})
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(text)
		return err
	}
	vf, err := openVocab(*modelPath)
	if err != nil {
		return err
	}
	defer vf.Close()
	text, err := vf.tok.Decode(ids)
	if err != nil {
		return err
	}
	// The text exactly, with no newline added: what Encode would read back.
	_, err = io.WriteString(os.Stdout, text)
	return err
}

// tokenizeRemote runs req on the server of rf (on its only model when req
// names none).
func tokenizeRemote(ctx context.Context, rf *remoteFlags, req *corelmv1.TokenizeRequest) (*corelmv1.TokenizeResponse, error) {
	return callModel(ctx, rf, &req.ModelId, func(ctx context.Context, r *remote) (*corelmv1.TokenizeResponse, error) {
		return r.client.Tokenize(ctx, req)
	})
}

// detokenizeRemote returns the exact bytes of req's ids on the server of
// rf.
func detokenizeRemote(ctx context.Context, rf *remoteFlags, req *corelmv1.DetokenizeRequest) ([]byte, error) {
	resp, err := callModel(ctx, rf, &req.ModelId, func(ctx context.Context, r *remote) (*corelmv1.DetokenizeResponse, error) {
		return r.client.Detokenize(ctx, req)
	})
	return resp.GetRaw(), err
}

// callModel makes one call about model *id on the server of rf, first
// setting *id to the server's only model when it is "", within the
// server's call timeout.
func callModel[T any](ctx context.Context, rf *remoteFlags, id *string, call func(context.Context, *remote) (T, error)) (T, error) {
	var zero T
	r, err := rf.connect()
	if err != nil {
		return zero, err
	}
	defer r.Close()
	if *id, err = r.modelID(ctx, *id); err != nil {
		return zero, err
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := call(ctx, r)
	return resp, r.error(*id, err)
}

// parseTokenIDs reads integers separated by spaces or commas, optionally in [].
func parseTokenIDs(s string) ([]int32, error) {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	ids := make([]int32, 0, len(fields))
	for _, f := range fields {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a token id", f)
		}
		ids = append(ids, int32(v))
	}
	return ids, nil
}
