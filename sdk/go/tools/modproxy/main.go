// Command modproxy publishes a module directory into a GOPROXY directory, as the Go module proxy
// would serve the module's tag: a zip made by golang.org/x/mod/zip (the code the go command uses,
// with its checks and exclusions), go.mod, .info and list. With GOPROXY=file://<out> a fresh
// project then runs the real `go get MODULE@VERSION`, checksums and all.
//
//	go run . -dir ../.. -module github.com/aiprod/aiprod/sdk/go -version v0.1.0 -out /tmp/proxy
//
// Hidden directories (.bin, .git) and nested modules (like this one) are left out, as they are
// from a module published from the repository.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	dir := flag.String("dir", "", "module root (holds go.mod)")
	path := flag.String("module", "", "module path")
	version := flag.String("version", "", "version, e.g. v0.1.0")
	out := flag.String("out", "", "GOPROXY directory to write")
	flag.Parse()
	if err := run(*dir, *path, *version, *out); err != nil {
		log.Fatalf("modproxy: %v", err)
	}
}

func run(dir, path, version, out string) error {
	m := module.Version{Path: path, Version: version}
	if err := module.Check(path, version); err != nil {
		return err
	}
	escaped, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	at := filepath.Join(out, filepath.FromSlash(escaped), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		return err
	}
	files, err := moduleFiles(dir)
	if err != nil {
		return err
	}
	z, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		return err
	}
	if err := zip.Create(z, m, files); err != nil {
		_ = z.Close()
		return err
	}
	if err := z.Close(); err != nil {
		return err
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	info, err := json.Marshal(map[string]string{"Version": version, "Time": time.Now().UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{version + ".mod": gomod, version + ".info": info, "list": []byte(version + "\n")} {
		if err := os.WriteFile(filepath.Join(at, name), data, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("modproxy: %s@%s: %d files\n", path, version, len(files))
	return nil
}

// moduleFiles lists the regular files of the module rooted at dir, without hidden directories and
// nested modules.
func moduleFiles(dir string) ([]zip.File, error) {
	var files []zip.File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p == dir {
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, file{rel: filepath.ToSlash(rel), abs: p})
		return nil
	})
	return files, err
}

// file is a zip.File read from disk.
type file struct{ rel, abs string }

func (f file) Path() string                 { return f.rel }
func (f file) Lstat() (os.FileInfo, error)  { return os.Lstat(f.abs) }
func (f file) Open() (io.ReadCloser, error) { return os.Open(f.abs) }
