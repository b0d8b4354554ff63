// Production settings of the AIPROD Go SDK: a private CA, the retry budget, a logging hook that
// sees every attempt, a deadline over the call and its retries, and the error's details.
//
//	AIPROD_ENDPOINT=https://aiprod.example.com AIPROD_API_KEY=aiprod_live_... AIPROD_CA=ca.pem go run .
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

func main() {
	opts := []aiprod.Option{
		aiprod.WithMaxAttempts(8),                               // per unary call, the first included (default 5; 1: no retries)
		aiprod.WithBackoff(100*time.Millisecond, 5*time.Second), // the defaults: full jitter, RetryInfo as a floor
		aiprod.WithWatchResumeTimeout(5 * time.Minute),          // WatchJob's reconnect window (default 120 s)
		aiprod.WithUnaryInterceptor(aiprod.AttemptHook(func(a aiprod.AttemptInfo) {
			log.Printf("%s attempt %d: %s in %v", a.Method, a.Attempt, a.Code, a.Duration.Round(time.Millisecond))
		})),
	}
	if ca := os.Getenv("AIPROD_CA"); ca != "" { // https:// trusts the system roots unless given a CA
		pem, err := os.ReadFile(ca)
		if err != nil {
			log.Fatal(err)
		}
		opts = append(opts, aiprod.WithCACert(pem))
	}
	client, err := aiprod.New(os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_API_KEY"), opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// The deadline bounds the whole call: every attempt and every wait between them.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = client.Render.CreateJob(ctx, &aiprodv1.CreateJobRequest{ // request_id: the SDK fills one
		PresetId: "quick_social", Brief: "too short"})
	if e, ok := aiprod.AsError(err); ok {
		fmt.Printf("%s: %s (transient: %v)\n", e.Code(), e.Message(), e.IsTransient())
		for _, v := range e.FieldViolations() {
			fmt.Printf("  %s: %s\n", v.Field, v.Description)
		}
		if d, ok := e.RetryDelay(); ok {
			fmt.Println("  retry in", d)
		}
	}
}
