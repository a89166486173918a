// logfmt-decode: reads log lines on stdin and prints each as a JSON array of [key, value]
// pairs, in order, decoded by go-logfmt (Debian's golang-github-go-logfmt-logfmt-dev), the
// parser Go programs (go-kit/log, Loki's promtail, ...) use. Strict beyond what go-logfmt
// itself requires: with -prefix P the first token must be the bare word P; every other token
// must be key=value with a non-empty value, keys [a-z][a-z0-9_]*, no key twice. The first bad
// line ends the program with status 1 and the reason on stderr.
//
// Built by tests/e2e/test_log_target.py with GOPATH=/usr/share/gocode GO111MODULE=off: no
// module download.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"

	"github.com/go-logfmt/logfmt"
)

var keyRe = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func main() {
	prefix := flag.String("prefix", "", "a bare word every line starts with")
	flag.Parse()
	dec := logfmt.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	line := 0
	for dec.ScanRecord() {
		line++
		pairs := [][2]string{}
		seen := map[string]bool{}
		first := true
		for dec.ScanKeyval() {
			k, v := dec.Key(), dec.Value()
			if first && *prefix != "" {
				first = false
				if string(k) != *prefix || v != nil {
					fail(line, "does not start with the bare word %q: %q", *prefix, k)
				}
				continue
			}
			first = false
			if !keyRe.Match(k) {
				fail(line, "bad key %q", k)
			}
			if v == nil {
				fail(line, "key %q without a value", k)
			}
			if seen[string(k)] {
				fail(line, "key %q twice", k)
			}
			seen[string(k)] = true
			pairs = append(pairs, [2]string{string(k), string(v)})
		}
		if err := dec.Err(); err != nil {
			fail(line, "%v", err)
		}
		if first {
			fail(line, "an empty line")
		}
		if err := out.Encode(pairs); err != nil {
			fail(line, "%v", err)
		}
	}
	if err := dec.Err(); err != nil {
		fail(line, "%v", err)
	}
}

func fail(line int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "logfmt-decode: line %d: %s\n", line, fmt.Sprintf(format, args...))
	os.Exit(1)
}
