package main

import (
	"os"
	"testing"
)

// TestConformance runs the scenario against the server whose env file (scripts/test-server.sh)
// is named by AIPROD_ENV_FILE. Skipped without one, unless AIPROD_REQUIRE_CONFORMANCE=1.
func TestConformance(t *testing.T) {
	envFile := os.Getenv("AIPROD_ENV_FILE")
	if envFile == "" && os.Getenv("AIPROD_ENDPOINT") == "" {
		if os.Getenv("AIPROD_REQUIRE_CONFORMANCE") == "1" {
			t.Fatal("AIPROD_ENV_FILE is not set: no server to run the conformance scenario against")
		}
		t.Skip("no server: set AIPROD_ENV_FILE to the env file of scripts/test-server.sh")
	}
	summary, err := run(envFile)
	if err != nil {
		t.Fatalf("conformance (go): FAILED: %v", err)
	}
	t.Logf("conformance (go): 11 steps passed: %s", summary)
}
