package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StatusClientClosedRequest is nginx's 499: the client went away before
// the answer. Nobody reads it; logs and the HTTP span do.
const StatusClientClosedRequest = 499

// Errors the gateway makes itself.
var (
	// ErrBadRequest: the HTTP request cannot become a generation; the
	// message says why.
	ErrBadRequest = errors.New("invalid request")
	// ErrUnauthenticated: --auth-token is set and the request lacks it.
	ErrUnauthenticated = errors.New("missing or invalid bearer token")
	// ErrTooLarge: the body exceeds --max-body.
	ErrTooLarge = errors.New("request body too large")
)

// requestError is a bad request naming the parameter at fault.
type requestError struct {
	param string
	msg   string
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return ErrBadRequest }

func badParam(param, format string, a ...any) error {
	return &requestError{param: param, msg: fmt.Sprintf(format, a...)}
}

// httpError is what an error becomes on the wire: the HTTP status, the
// body and, for overload and unavailability, how long to wait.
type httpError struct {
	status     int
	body       apiError
	retryAfter time.Duration
}

// toHTTP maps an error (a gRPC status from inference, a context error, or
// the gateway's own) to its HTTP answer; it is the only place that does.
func toHTTP(err error) httpError {
	var re *requestError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &re):
		return newHTTPError(http.StatusBadRequest, "invalid_request_error", re.msg, re.param, "")
	case errors.Is(err, ErrBadRequest):
		return newHTTPError(http.StatusBadRequest, "invalid_request_error", err.Error(), "", "")
	case errors.As(err, &mbe), errors.Is(err, ErrTooLarge):
		return newHTTPError(http.StatusRequestEntityTooLarge, "invalid_request_error", err.Error(), "", "request_too_large")
	case errors.Is(err, ErrUnauthenticated):
		return newHTTPError(http.StatusUnauthorized, "authentication_error", err.Error(), "", "invalid_api_key")
	case errors.Is(err, context.Canceled):
		return newHTTPError(StatusClientClosedRequest, "client_closed_request", err.Error(), "", "")
	case errors.Is(err, context.DeadlineExceeded):
		return newHTTPError(http.StatusGatewayTimeout, "timeout_error", err.Error(), "", "")
	}
	st, ok := status.FromError(err)
	if !ok {
		return newHTTPError(http.StatusInternalServerError, "server_error", err.Error(), "", "")
	}
	msg := st.Message()
	var he httpError
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		he = newHTTPError(http.StatusBadRequest, "invalid_request_error", msg, "", "")
	case codes.Unauthenticated:
		he = newHTTPError(http.StatusUnauthorized, "authentication_error", msg, "", "invalid_api_key")
	case codes.PermissionDenied:
		he = newHTTPError(http.StatusForbidden, "permission_error", msg, "", "")
	case codes.NotFound:
		he = newHTTPError(http.StatusNotFound, "invalid_request_error", msg, "model", "model_not_found")
	case codes.ResourceExhausted:
		he = newHTTPError(http.StatusTooManyRequests, "rate_limit_error", msg, "", "rate_limit_exceeded")
	case codes.Canceled:
		he = newHTTPError(StatusClientClosedRequest, "client_closed_request", msg, "", "")
	case codes.DeadlineExceeded:
		he = newHTTPError(http.StatusGatewayTimeout, "timeout_error", msg, "", "")
	case codes.Unavailable:
		he = newHTTPError(http.StatusServiceUnavailable, "service_unavailable_error", msg, "", "")
	case codes.Unimplemented:
		he = newHTTPError(http.StatusNotImplemented, "server_error", msg, "", "")
	default:
		he = newHTTPError(http.StatusInternalServerError, "server_error", msg, "", "")
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			he.retryAfter = ri.GetRetryDelay().AsDuration()
		}
	}
	return he
}

// statusOf is the error of a final frame's error_code and message.
func statusOf(code int32, msg string) error {
	return status.Error(codes.Code(code), msg)
}

func newHTTPError(code int, typ, msg, param, errCode string) httpError {
	he := httpError{status: code, body: apiError{Error: errorBody{Message: msg, Type: typ}}}
	if param != "" {
		he.body.Error.Param = &param
	}
	if errCode != "" {
		he.body.Error.Code = &errCode
	}
	return he
}

// retryAfterSeconds is a Retry-After header value: whole seconds, rounded
// up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// writeError answers with err's status and OpenAI error body.
func writeError(w http.ResponseWriter, err error) {
	he := toHTTP(err)
	if he.retryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(he.retryAfter))
	}
	writeJSON(w, he.status, he.body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":{"message":"encoding the response failed","type":"server_error","param":null,"code":null}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
