module github.com/aiprod/aiprod/sdk/go/tools/modproxy

go 1.24.0

require golang.org/x/mod v0.32.0
