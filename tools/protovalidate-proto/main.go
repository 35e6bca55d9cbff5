// Command protovalidate-proto writes buf/validate/validate.proto from the file
// descriptor compiled into the protovalidate Go module.
//
// The Buf Schema Registry cannot be reached from our build machines, so
// buf.yaml cannot depend on buf.build/bufbuild/protovalidate. The same schema
// ships inside a Go module that the Go module proxy serves, so `task generate`
// prints it back to source into a git-ignored folder that buf.yaml lists as a
// second workspace module.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/jhump/protoreflect/v2/protoprint"
)

func main() {
	out := flag.String("out", "", "folder to write buf/validate/validate.proto into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "protovalidate-proto: -out is required")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "protovalidate-proto:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	fd := validate.File_buf_validate_validate_proto
	path := filepath.Join(out, fd.Path())
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	printer := protoprint.Printer{}
	if err := printer.PrintProtoFile(fd, f); err != nil {
		f.Close()
		return fmt.Errorf("print %s: %w", fd.Path(), err)
	}
	return f.Close()
}
