package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
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
	modelPath := fs.String("model", "", "GGUF model or vocabulary file (default: the embedded "+models.Name+")")
	text := fs.String("text", "", "text to tokenize, exactly as given")
	file := fs.String("file", "", "file whose bytes to tokenize (- for standard input)")
	noBOS := fs.Bool("no-bos", false, "do not add BOS (or EOS) even if the model asks for it")
	special := fs.Bool("special", false, "recognise control tokens such as <|im_start|> written in the text")
	pieces := fs.Bool("pieces", false, "print one token per line with its text")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	textSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "text" {
			textSet = true
		}
	})
	if textSet == (*file != "") || fs.NArg() != 0 {
		return usagef("usage: corelm tokenize --model MODEL (--text TEXT | --file F) [--no-bos] [--special] [--pieces]")
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
	vf, err := openVocab(*modelPath)
	if err != nil {
		return err
	}
	defer vf.Close()
	opts := tokenizer.EncodeOptions{ParseSpecial: *special}
	if *noBOS {
		opts.AddBOS = tokenizer.BOSNone
	}
	ids, err := vf.tok.Encode(input, opts)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	if *pieces {
		for _, id := range ids {
			fmt.Fprintf(w, "%d\t%s\n", id, strconv.Quote(string(vf.tok.TokenBytes(id))))
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
	modelPath := fs.String("model", "", "GGUF model or vocabulary file (default: the embedded "+models.Name+")")
	idList := fs.String("ids", "", `token ids, e.g. "1 15043 3186" (commas and brackets are fine too)`)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() != 0 {
		return usagef("usage: corelm detokenize --model MODEL --ids \"1 2 3\"")
	}
	ids, err := parseTokenIDs(*idList)
	if err != nil {
		return usagef("--ids: %v", err)
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
