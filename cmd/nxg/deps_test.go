package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductionBinaryLinksNoStandIns keeps the dev stand-ins (FerretDB,
// gofakes3, miniredis and our devstack) out of the production binary: they
// are large, they open listeners, and nothing in production may start one by
// mistake.
func TestProductionBinaryLinksNoStandIns(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list returned only %d packages; the check would prove nothing", len(deps))
	}
	forbidden := []string{
		"github.com/nxg-fitness/nxg/internal/devstack",
		"github.com/nxg-fitness/nxg/internal/testkit",
		"github.com/FerretDB/FerretDB",
		"github.com/johannesboyne/gofakes3",
		"github.com/alicebob/miniredis",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("cmd/nxg links %s", d)
			}
		}
	}
}
