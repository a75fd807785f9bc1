package corelmv1

import (
	"errors"
	"fmt"
	"regexp"
)

// Request validation, one function per RPC request that needs it. The
// go-grpc-middleware validator interceptor calls Validate and answers
// InvalidArgument with its message. Checks that need server state (does
// the path stay inside the source directory?) belong to the server.

// modelID is what a model id may look like: it names files, so no
// separators and no leading dot.
var modelID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateModelID checks a model id.
func ValidateModelID(id string) error {
	if id == "" {
		return errors.New("model_id is required")
	}
	if !modelID.MatchString(id) {
		return fmt.Errorf("model_id %q: want 1 to 64 characters of [A-Za-z0-9._-] starting with a letter or digit", id)
	}
	return nil
}

// Validate checks a LoadModel request. The path may be empty: the model is
// then loaded by id (its published generation, the file of a model named at
// the loader's start, or <model_id>.gguf in the source directory), which is
// how the inference service loads a model a request asks for.
func (r *LoadModelRequest) Validate() error {
	if err := ValidateModelID(r.GetModelId()); err != nil {
		return err
	}
	if o := r.GetOptions(); o != nil {
		if _, ok := KVType_name[int32(o.GetKvType())]; !ok {
			return fmt.Errorf("options.kv_type: unknown value %d", o.GetKvType())
		}
		if o.GetContext() < 0 {
			return fmt.Errorf("options.context: %d is negative", o.GetContext())
		}
	}
	return nil
}

// Validate checks an UnloadModel request.
func (r *UnloadModelRequest) Validate() error { return ValidateModelID(r.GetModelId()) }
