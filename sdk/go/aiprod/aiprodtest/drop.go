// Package aiprodtest has test helpers for code that uses the aiprod SDK.
package aiprodtest

import (
	"context"
	"net"
	"sync"
)

// DropDialer dials TCP connections for a gRPC client and can cut them all at once, as a network
// failure would (TCP reset), while later dials still succeed. Plug it into a client with
//
//	d := aiprodtest.NewDropDialer()
//	client, err := aiprod.New(endpoint, key, aiprod.WithDialOptions(grpc.WithContextDialer(d.DialContext)))
//
// and call d.Drop() mid-stream to prove that WatchJob resumes after a real connection loss.
type DropDialer struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	dials int
	d     net.Dialer
}

// NewDropDialer returns a DropDialer.
func NewDropDialer() *DropDialer { return &DropDialer{conns: map[net.Conn]struct{}{}} }

// DialContext dials addr over TCP and tracks the connection (grpc.WithContextDialer signature).
func (d *DropDialer) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conns[c] = struct{}{}
	d.dials++
	d.mu.Unlock()
	return c, nil
}

// Dials returns how many connections were dialed so far (a reconnect adds one).
func (d *DropDialer) Dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials
}

// Drop resets every connection dialed so far and returns how many it cut.
func (d *DropDialer) Drop() int {
	d.mu.Lock()
	conns := d.conns
	d.conns = map[net.Conn]struct{}{}
	d.mu.Unlock()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = c.Close()
	}
	return len(conns)
}
