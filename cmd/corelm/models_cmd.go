package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

func runModels(ctx context.Context, args []string) error {
	fs := newFlags("models")
	var rf remoteFlags
	asJSON := fs.Bool("json", false, "print the server's ListModels answer as JSON")
	rf.bind(fs, 30*time.Second)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if rf.server == "" || fs.NArg() != 0 {
		return usagef("usage: corelm models --server ADDR [--json]")
	}
	r, err := rf.connect()
	if err != nil {
		return err
	}
	defer r.Close()
	callCtx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.client.ListModels(callCtx, &corelmv1.ListModelsRequest{})
	if err != nil {
		return r.error("", err)
	}
	if *asJSON {
		b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Printf("%s\n", b)
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tARCH\tCONTEXT\tKV\tGENERATION\tWEIGHTS")
	for _, m := range resp.GetModels() {
		if m.GetState() == corelmv1.ModelState_MODEL_STATE_LOADING {
			// Only the id is known until the model is mapped.
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\n", m.GetModelId(), state(m))
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.GetModelId(), state(m), m.GetArchitecture(), contextColumn(m),
			kvTypeName(m.GetKvType()), m.GetGeneration(), humanBytes(m.GetWeightBytes()))
	}
	return w.Flush()
}

// contextColumn is the context the server runs the model with, and the
// trained one when that is larger: "8192/131072".
func contextColumn(m *corelmv1.ModelInfo) string {
	served := strconv.Itoa(int(m.GetMaxContext()))
	if m.GetContextLength() > m.GetMaxContext() {
		served += "/" + strconv.Itoa(int(m.GetContextLength()))
	}
	return served
}

// kvTypeName is the --kv-type spelling of t: "f16", "q8_0".
func kvTypeName(t corelmv1.KVType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "KV_TYPE_"))
}

// state is the model's state in lower case ("ready", "loading"), or "-"
// from a server that does not say.
func state(m *corelmv1.ModelInfo) string {
	if m.GetState() == corelmv1.ModelState_MODEL_STATE_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(m.GetState().String(), "MODEL_STATE_"))
}
