package server

import "github.com/nxg-fitness/nxg/internal/testkit"

// syncBuffer collects a logger's output from handler goroutines while the
// test reads it.
type syncBuffer = testkit.SyncBuffer
