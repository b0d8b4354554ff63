// Package aiprod is the Go SDK of the AIPROD video production gRPC API.
//
// A Client wraps one gRPC connection and exposes every service as its generated, context-aware
// gRPC client (Presets, CostEstimator, Render, Icc, Admin), with the bearer token, a default
// deadline for unary calls, retries with backoff (UNAVAILABLE for calls safe to repeat,
// RESOURCE_EXHAUSTED with RetryInfo), a per-attempt hook and rich errors (*Error) added by
// interceptors; TLS, keepalive and the user agent aiprod-sdk-go/<Version> by default (the shared
// semantics: sdk/PRODUCTION.md in the repository). On top of them it
// offers WatchJob, a job event stream that resumes by itself after connection loss, the list
// iterators Jobs and Tenants, and downloads of videos and shot clips over google.bytestream
// (DownloadVideo, DownloadShotClip, ReadResource) that resume and verify what they write.
//
//	client, err := aiprod.New("http://127.0.0.1:50051", apiKey)
//	if err != nil { ... }
//	defer client.Close()
//	resp, err := client.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})
package aiprod

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// Version is the SDK version (sdk/VERSION), sent in the user agent aiprod-sdk-go/<Version>.
const Version = "0.1.0"

// DefaultTimeout is the default deadline of unary calls whose context has none.
const DefaultTimeout = 30 * time.Second

// Keepalive pings while calls are open (see sdk/PRODUCTION.md): a dead connection is noticed
// within about 40 s instead of at the next TCP timeout.
const (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

const adminPrefix = "/aiprod.v1.AdminService/"

// Client is a connection to an AIPROD server. It is safe for concurrent use; Close it when done.
type Client struct {
	conn *grpc.ClientConn

	// Presets lists the presets (PresetService).
	Presets aiprodv1.PresetServiceClient
	// CostEstimator quotes jobs and reports their certified costs (CostEstimatorService).
	CostEstimator aiprodv1.CostEstimatorServiceClient
	// Render creates, lists, watches and cancels jobs (RenderService). Prefer Client.WatchJob
	// to Render.WatchJob: it resumes after disconnects.
	Render aiprodv1.RenderServiceClient
	// Icc reviews, edits and approves manifests (IccService).
	Icc aiprodv1.IccServiceClient
	// Admin manages tenants and API keys with the admin token (AdminService).
	Admin aiprodv1.AdminServiceClient
	// ByteStream reads the bytes of videos, clips and posters (google.bytestream.ByteStream, from
	// google.golang.org/genproto/googleapis/bytestream). Prefer Client.DownloadVideo,
	// Client.DownloadShotClip and Client.ReadResource: they resume and verify.
	ByteStream bytestream.ByteStreamClient

	initialBackoff, maxBackoff time.Duration
	watchResumeTimeout         time.Duration
}

type options struct {
	adminToken         string
	timeout            time.Duration
	tls                *bool
	tlsConfig          *tls.Config
	caPEM              []byte
	dialOptions        []grpc.DialOption
	interceptors       []grpc.UnaryClientInterceptor
	maxAttempts        int
	initialBackoff     time.Duration
	maxBackoff         time.Duration
	watchResumeTimeout time.Duration
}

// Option configures a Client.
type Option func(*options)

// WithAdminToken sets the operator credential sent as the bearer of AdminService calls.
func WithAdminToken(token string) Option { return func(o *options) { o.adminToken = token } }

// WithTimeout sets the default deadline of unary calls whose context has no deadline (default
// 30 s; 0 means none). A call overrides it with its own context deadline, or drops it with
// NoTimeout. The deadline bounds the whole call, retries and waits included.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithTLS forces TLS with the given config (nil: the system roots).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { t := true; o.tls = &t; o.tlsConfig = cfg }
}

// WithCACert forces TLS and trusts the certificate authorities of pemCerts (PEM, e.g. the content of
// ca.pem) instead of the system roots: for a server with a private CA. New fails if pemCerts has no
// certificate.
func WithCACert(pemCerts []byte) Option {
	return func(o *options) { t := true; o.tls = &t; o.caPEM = pemCerts }
}

// WithInsecure forces a plaintext connection (the default for http:// and loopback endpoints).
func WithInsecure() Option { return func(o *options) { f := false; o.tls = &f } }

// WithDialOptions adds gRPC dial options (e.g. grpc.WithContextDialer); they come after the SDK's
// own, so grpc.WithKeepaliveParams or grpc.WithConnectParams here replace its defaults.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithUnaryInterceptor adds a hook that sees every attempt of every unary call, retries included
// (AttemptFromContext tells which attempt; AttemptHook builds one from a function). Interceptors
// run in the order added, inside the retry loop, after the bearer token and deadline are set.
func WithUnaryInterceptor(i grpc.UnaryClientInterceptor) Option {
	return func(o *options) { o.interceptors = append(o.interceptors, i) }
}

// WithMaxAttempts sets the attempt budget of unary calls, the first attempt included (default 5;
// 1 disables retries).
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = max(n, 1) } }

// WithBackoff sets the retry waits: retry n waits uniform(0, min(maxBackoff, initial × 2^(n-1)))
// and at least the server's RetryInfo delay (defaults 100 ms and 5 s). WatchJob uses it too.
func WithBackoff(initial, maxBackoff time.Duration) Option {
	return func(o *options) { o.initialBackoff, o.maxBackoff = initial, maxBackoff }
}

// WithWatchResumeTimeout sets how long WatchJob keeps reconnecting while no event arrives
// (default 120 s).
func WithWatchResumeTimeout(d time.Duration) Option {
	return func(o *options) { o.watchResumeTimeout = d }
}

type noTimeoutKey struct{}

// NoTimeout returns a context whose unary calls get no default deadline.
func NoTimeout(ctx context.Context) context.Context {
	return context.WithValue(ctx, noTimeoutKey{}, true)
}

// ParseEndpoint returns the gRPC target and whether to use TLS for "http://host:port" (plaintext),
// "https://host[:port]" (TLS, port 443 by default) or "host:port" (TLS unless the host is loopback).
func ParseEndpoint(endpoint string) (target string, useTLS bool, err error) {
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			return "", false, fmt.Errorf("aiprod: endpoint must be http://host:port, https://host[:port] or host:port: %q", endpoint)
		}
		useTLS = u.Scheme == "https"
		port := u.Port()
		if port == "" {
			port = map[bool]string{true: "443", false: "80"}[useTLS]
		}
		return net.JoinHostPort(u.Hostname(), port), useTLS, nil
	}
	if endpoint == "" {
		return "", false, errors.New("aiprod: empty endpoint")
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	return endpoint, !loopback, nil
}

// New connects to endpoint (see ParseEndpoint) with an API key sent as
// "authorization: Bearer <apiKey>" on every call but AdminService's. The connection is made
// lazily, on the first call.
func New(endpoint, apiKey string, opts ...Option) (*Client, error) {
	o := options{
		timeout: DefaultTimeout, maxAttempts: DefaultMaxAttempts,
		initialBackoff: DefaultInitialBackoff, maxBackoff: DefaultMaxBackoff,
		watchResumeTimeout: DefaultWatchResumeTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	target, useTLS, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if o.tls != nil {
		useTLS = *o.tls
	}
	creds := insecure.NewCredentials()
	if useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12} // RootCAs nil: the system roots
		if o.tlsConfig != nil {
			cfg = o.tlsConfig.Clone()
		}
		if o.caPEM != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(o.caPEM) {
				return nil, errors.New("aiprod: WithCACert: no PEM certificate found")
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	auth := authenticator{apiKey: apiKey, adminToken: o.adminToken, timeout: o.timeout}
	retry := retrier{maxAttempts: o.maxAttempts, initial: o.initialBackoff, maxB: o.maxBackoff}
	backoffCfg := backoff.DefaultConfig
	// Reconnect on the SDK's schedule rather than gRPC's default (1 s growing to 120 s), so that
	// a restarted server is reached again within seconds, inside the calls' retry budget.
	backoffCfg.BaseDelay, backoffCfg.MaxDelay = o.initialBackoff, o.maxBackoff
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("aiprod-sdk-go/" + Version),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffCfg, MinConnectTimeout: 20 * time.Second}),
		grpc.WithChainUnaryInterceptor(append([]grpc.UnaryClientInterceptor{auth.unary, retry.unary}, o.interceptors...)...),
		grpc.WithChainStreamInterceptor(auth.stream),
	}, o.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("aiprod: %w", err)
	}
	return &Client{
		conn:               conn,
		Presets:            aiprodv1.NewPresetServiceClient(conn),
		CostEstimator:      aiprodv1.NewCostEstimatorServiceClient(conn),
		Render:             aiprodv1.NewRenderServiceClient(conn),
		Icc:                aiprodv1.NewIccServiceClient(conn),
		Admin:              aiprodv1.NewAdminServiceClient(conn),
		ByteStream:         bytestream.NewByteStreamClient(conn),
		initialBackoff:     o.initialBackoff,
		maxBackoff:         o.maxBackoff,
		watchResumeTimeout: o.watchResumeTimeout,
	}, nil
}

// NewFromEnv is New with AIPROD_ENDPOINT and AIPROD_API_KEY, and AIPROD_ADMIN_TOKEN if set.
func NewFromEnv(opts ...Option) (*Client, error) {
	if tok := os.Getenv("AIPROD_ADMIN_TOKEN"); tok != "" {
		opts = append([]Option{WithAdminToken(tok)}, opts...)
	}
	return New(os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_API_KEY"), opts...)
}

// Conn returns the underlying gRPC connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with Canceled.
func (c *Client) Close() error { return c.conn.Close() }

type authenticator struct {
	apiKey, adminToken string
	timeout            time.Duration
}

func (a authenticator) withAuth(ctx context.Context, method string) context.Context {
	token := a.apiKey
	if strings.HasPrefix(method, adminPrefix) {
		token = a.adminToken
	}
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func (a authenticator) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = a.withAuth(ctx, method)
	if _, has := ctx.Deadline(); !has && a.timeout > 0 && ctx.Value(noTimeoutKey{}) == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
		return FromError(err)
	}
	return nil
}

func (a authenticator) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(a.withAuth(ctx, method), desc, cc, method, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	return errStream{s}, nil
}

// errStream turns the errors of a stream into *Error (io.EOF stays io.EOF).
type errStream struct{ grpc.ClientStream }

func (s errStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return FromError(err)
}
