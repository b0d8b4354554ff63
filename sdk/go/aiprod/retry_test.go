package aiprod_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// attempts records what the hook saw.
type attempts struct {
	mu  sync.Mutex
	all []aiprod.AttemptInfo
}

func (a *attempts) hook() aiprod.Option {
	return aiprod.WithUnaryInterceptor(aiprod.AttemptHook(func(i aiprod.AttemptInfo) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.all = append(a.all, i)
	}))
}

// codes returns the code of every attempt of method (its last path segment).
func (a *attempts) codes(method string) []codes.Code {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []codes.Code
	for _, i := range a.all {
		if strings.HasSuffix(i.Method, "/"+method) {
			out = append(out, i.Code)
		}
	}
	return out
}

func TestRetriesReadsOnUnavailable(t *testing.T) {
	ep, _ := startFake(t)
	var seen attempts
	c := newClient(t, ep, seen.hook())
	resp, err := c.Presets.GetPreset(context.Background(), &aiprodv1.GetPresetRequest{PresetId: "fail-2"})
	if err != nil || resp.GetPreset().GetPresetId() != "fail-2" {
		t.Fatalf("%v %v", resp, err)
	}
	if got := seen.codes("GetPreset"); !slices.Equal(got, []codes.Code{codes.Unavailable, codes.Unavailable, codes.OK}) {
		t.Fatalf("attempts %v", got)
	}
	for i, a := range seen.all {
		if a.Attempt != i+1 {
			t.Fatalf("attempt numbers %+v", seen.all)
		}
	}
}

func TestAttemptBudget(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep) // default: 5 attempts
	_, err := c.Presets.GetPreset(context.Background(), &aiprodv1.GetPresetRequest{PresetId: "down"})
	if aiprod.Code(err) != codes.Unavailable || rec.attempts("GetPreset/down") != 5 {
		t.Fatalf("%v after %d attempts", err, rec.attempts("GetPreset/down"))
	}
	one := newClient(t, ep, aiprod.WithMaxAttempts(1))
	_, err = one.Presets.GetPreset(context.Background(), &aiprodv1.GetPresetRequest{PresetId: "fail-1"})
	if aiprod.Code(err) != codes.Unavailable || rec.attempts("GetPreset/fail-1") != 1 {
		t.Fatalf("max attempts 1: %v after %d attempts", err, rec.attempts("GetPreset/fail-1"))
	}
}

func TestUnsafeCallsAreNotRetriedOnUnavailable(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	_, err := c.Admin.CreateTenant(context.Background(), &aiprodv1.CreateTenantRequest{Name: "down"})
	if aiprod.Code(err) != codes.Unavailable || rec.attempts("CreateTenant/down") != 1 {
		t.Fatalf("%v after %d attempts", err, rec.attempts("CreateTenant/down"))
	}
}

func TestResourceExhaustedIsRetriedOnlyWithRetryInfo(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	start := time.Now()
	resp, err := c.Admin.CreateTenant(context.Background(), &aiprodv1.CreateTenantRequest{Name: "limited"})
	if err != nil || resp.GetTenant().GetName() != "limited" || rec.attempts("CreateTenant/limited") != 2 {
		t.Fatalf("%v %v after %d attempts", resp, err, rec.attempts("CreateTenant/limited"))
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("retried after %v, before the RetryInfo delay of 50 ms", took)
	}
	_, err = c.Admin.CreateTenant(context.Background(), &aiprodv1.CreateTenantRequest{Name: "quota"})
	if aiprod.Code(err) != codes.ResourceExhausted || rec.attempts("CreateTenant/quota") != 1 || aiprod.IsTransient(err) {
		t.Fatalf("quota: %v after %d attempts", err, rec.attempts("CreateTenant/quota"))
	}
}

func TestCreateJobGetsOneRequestIDForAllAttempts(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	req := &aiprodv1.CreateJobRequest{PresetId: "quick_social", Brief: "lost response brief"}
	if _, err := c.Render.CreateJob(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	ids := rec.requestIDs
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] || !strings.HasPrefix(ids[0], "sdk-go-") {
		t.Fatalf("request ids of the attempts: %q", ids)
	}
	if req.RequestId != "" {
		t.Fatalf("the caller's request was modified: %q", req.RequestId)
	}
	// The caller's own key is kept.
	req.RequestId = "mine"
	if _, err := c.Render.CreateJob(context.Background(), req); err != nil || rec.requestIDs[2] != "mine" {
		t.Fatalf("%v %q", err, rec.requestIDs)
	}
}

func TestDeadlineBoundsTheRetries(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	// The RetryInfo delay (1.5 s) is longer than the deadline: the last error at once, no sleep.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: "busy"})
	if took := time.Since(start); aiprod.Code(err) != codes.ResourceExhausted || took > 200*time.Millisecond {
		t.Fatalf("%v after %v", err, took)
	}
	// UNAVAILABLE forever: the retries stop by the deadline (with the last error or
	// DEADLINE_EXCEEDED), never after it.
	slow := newClient(t, ep, aiprod.WithMaxAttempts(100), aiprod.WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	ctx, cancel = context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = slow.Presets.GetPreset(ctx, &aiprodv1.GetPresetRequest{PresetId: "down"})
	took := time.Since(start)
	if code := aiprod.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	if took > 400*time.Millisecond+100*time.Millisecond || rec.attempts("GetPreset/down") < 3 {
		t.Fatalf("stopped after %v and %d attempts", took, rec.attempts("GetPreset/down"))
	}
}

func TestDeadlineExceededIsReportedAsSuch(t *testing.T) {
	ep, _ := startFake(t)
	c := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Presets.GetPreset(ctx, &aiprodv1.GetPresetRequest{PresetId: "slow"})
	e, ok := aiprod.AsError(err)
	if !ok || e.Code() != codes.DeadlineExceeded || !e.IsTransient() {
		t.Fatalf("got %v", err)
	}
}

func TestIsTransient(t *testing.T) {
	busy, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(retryInfo(time.Second))
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, ""), true},
		{status.Error(codes.DeadlineExceeded, ""), true},
		{context.DeadlineExceeded, true},
		{busy.Err(), true},
		{status.Error(codes.ResourceExhausted, "quota"), false},
		{status.Error(codes.NotFound, ""), false},
		{status.Error(codes.Internal, ""), false},
		{nil, false},
	} {
		if got := aiprod.IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v", tc.err, got)
		}
	}
}

func TestUserAgent(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	if _, err := c.Presets.ListPresets(context.Background(), &aiprodv1.ListPresetsRequest{}); err != nil {
		t.Fatal(err)
	}
	// gRPC appends its own product token ("grpc-go/x.y.z").
	if !strings.HasPrefix(rec.userAgent, "aiprod-sdk-go/"+aiprod.Version+" ") || !strings.Contains(rec.userAgent, "grpc-go/") {
		t.Fatalf("user-agent %q", rec.userAgent)
	}
}

func TestTLSWithACustomCA(t *testing.T) {
	caPEM, serverCert := testPKI(t)
	ep, _, _ := startFakeStore(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert}})))
	endpoint := "https://" + strings.TrimPrefix(ep, "http://")
	c := newClient(t, endpoint, aiprod.WithCACert(caPEM))
	if _, err := c.Presets.ListPresets(context.Background(), &aiprodv1.ListPresetsRequest{}); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	// With the system roots the private CA is unknown: UNAVAILABLE, and the cause is in the message.
	sys := newClient(t, endpoint, aiprod.WithMaxAttempts(1))
	_, err := sys.Presets.ListPresets(context.Background(), &aiprodv1.ListPresetsRequest{})
	if aiprod.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with the system roots: %v", err)
	}
	if _, err := aiprod.New(endpoint, apiKey, aiprod.WithCACert([]byte("not a certificate"))); err == nil {
		t.Fatal("a CA without certificate was accepted")
	}
}

// testPKI returns a CA certificate (PEM) and a server certificate for 127.0.0.1 that it signed.
func testPKI(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "aiprod test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	must(err)
	ca, err = x509.ParseCertificate(caDER)
	must(err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	must(err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

func retryInfo(d time.Duration) *errdetails.RetryInfo {
	return &errdetails.RetryInfo{RetryDelay: durationpb.New(d)}
}
