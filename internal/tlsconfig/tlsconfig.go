// Package tlsconfig builds every TLS configuration corelm uses, from PEM
// files named by flags: the servers' (loader, inference, gateway, with an
// optional client-certificate check) and the clients' (inference → loader,
// gateway → inference, the CLI → a server, with an optional client
// certificate for mTLS). One place, so that every link gets the same
// minimum version and the same rules.
//
// Certificates are read once at start; a renewed certificate needs a
// restart.
package tlsconfig

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/corelm/corelm/internal/envflag"
)

// minVersion is TLS 1.2: 1.3 is negotiated whenever both ends have it.
const minVersion = tls.VersionTLS12

// Server are a listener's TLS files. All empty: plaintext.
type Server struct {
	Cert, Key string // PEM certificate (chain) and private key
	// ClientCA, when set, makes clients present a certificate that this
	// PEM bundle's CAs signed (mTLS); a client without one is refused.
	ClientCA string
}

// Bind binds --tls-cert, --tls-key and --tls-client-ca.
func (f *Server) Bind(fs *envflag.Set) {
	fs.String(&f.Cert, "tls-cert", "", "serve TLS with this PEM certificate (chain); needs --tls-key (default: plaintext)")
	fs.String(&f.Key, "tls-key", "", "the PEM private key of --tls-cert")
	fs.String(&f.ClientCA, "tls-client-ca", "", "require client certificates signed by these PEM CA certificates (mTLS); needs --tls-cert")
}

// Config is the server configuration, nil when TLS is off.
func (f Server) Config() (*tls.Config, error) {
	if f.Cert == "" && f.Key == "" {
		if f.ClientCA != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	c := &tls.Config{MinVersion: minVersion, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	if f.ClientCA != "" {
		if c.ClientCAs, err = pool(f.ClientCA); err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Client are a client's TLS files. TLS is on when any is set (or
// Enable): without CA the system's roots verify the server.
type Client struct {
	// Enable turns TLS on with the system's roots when no file is given.
	Enable bool
	CA     string // PEM CA certificates that sign the server's certificate
	// Cert and Key are the client's certificate, for a server that
	// checks them (mTLS).
	Cert, Key string
	// flag names, for messages
	names [3]string
}

// Bind binds the client flags of the link to peer ("loader",
// "inference"): --<peer>-tls-ca, --<peer>-client-cert and
// --<peer>-client-key. (Not --<peer>-tls-cert: CORELM_LOADER_TLS_CERT is
// the loader's own certificate.)
func (f *Client) Bind(fs *envflag.Set, peer string) {
	f.names = [3]string{peer + "-tls-ca", peer + "-client-cert", peer + "-client-key"}
	fs.String(&f.CA, f.names[0], "", "connect to the "+peer+" over TLS, verifying its certificate with these PEM CA certificates (default: plaintext)")
	fs.String(&f.Cert, f.names[1], "", "present this PEM client certificate to the "+peer+" (mTLS; turns TLS on, verified with the system's roots without --"+f.names[0]+")")
	fs.String(&f.Key, f.names[2], "", "the PEM private key of --"+f.names[1])
}

// Config is the client configuration, nil when TLS is off.
func (f Client) Config() (*tls.Config, error) {
	ca, cert, key := "--tls-ca", "--tls-cert", "--tls-key"
	if f.names[0] != "" {
		ca, cert, key = "--"+f.names[0], "--"+f.names[1], "--"+f.names[2]
	}
	if !f.Enable && f.CA == "" && f.Cert == "" && f.Key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: minVersion}
	if f.CA != "" {
		var err error
		if c.RootCAs, err = pool(f.CA); err != nil {
			return nil, fmt.Errorf("%s: %w", ca, err)
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("%s and %s go together", cert, key)
	}
	if f.Cert != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", cert, key, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// pool reads PEM CA certificates.
func pool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return p, nil
}

// ServerOption is the gRPC server option of c: TLS credentials, or none
// (plaintext) when c is nil.
func ServerOption(c *tls.Config) []grpc.ServerOption {
	if c == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(c))}
}

// DialOption is the gRPC client's transport: TLS with c, plaintext when c
// is nil.
func DialOption(c *tls.Config) grpc.DialOption {
	if c == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(c))
}

// Bearer is a gRPC client's per-call credentials: "authorization: Bearer
// <Token>". TLS says the transport is TLS; grpc-go then refuses to send
// the token over plaintext by mistake.
type Bearer struct {
	Token string
	TLS   bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return b.TLS }

// Self is a client configuration for calling a server of this process
// that serves with server (serve-all's gateway calling its inference
// service): it trusts exactly the server's own certificate, whatever the
// address dialled, and presents it as its client certificate when the
// server asks for one (so under mTLS that certificate needs the clientAuth
// usage too).
func Self(server *tls.Config) *tls.Config {
	if server == nil {
		return nil
	}
	own := server.Certificates[0].Certificate[0]
	return &tls.Config{
		MinVersion:   minVersion,
		Certificates: server.Certificates,
		// The dialled address (127.0.0.1) need not be in the
		// certificate: VerifyConnection checks the certificate itself.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, own) {
				return errors.New("tlsconfig: the server is not this process's own")
			}
			return nil
		},
	}
}
