// Command server is the built-in chat and push service, and the CLI of
// package forkd: `server start`, `stop`, `reload`, `restart`, `status`,
// `connections`, `bench`.
package main

import (
	"fmt"
	"os"

	_ "github.com/forkd/forkd/bench" // the bench command (links the load generator and its charts)
)

func main() {
	if err := newServer().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}
