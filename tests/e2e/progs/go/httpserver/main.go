// httpserver: a net/http server for the supervised-mode tests (tests/e2e/test_supervise.py).
// It listens on 127.0.0.1:0 (or -listen), prints "listening PORT", and answers every request
// with one JSON line: the client address net/http saw (RemoteAddr) and the local one.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local := ""
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local = a.String()
		}
		b, _ := json.Marshal(map[string]string{"remote": r.RemoteAddr, "local": local, "path": r.URL.Path})
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(b, '\n'))
	})
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}
