package testkit

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// AuthEnv returns fresh signing, master, audit and check-in keys as the environment
// variables the server reads them from, for tests that build a full
// configuration.
func AuthEnv(t testing.TB) map[string]string {
	t.Helper()
	env, err := GenerateAuthEnv()
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// GenerateAuthEnv is AuthEnv outside a test, for package-level fixtures.
func GenerateAuthEnv() (map[string]string, error) {
	jwks, err := token.GenerateKeyRingJSON()
	if err != nil {
		return nil, err
	}
	master, err := fieldcrypt.GenerateMasterKeySpec("test1")
	if err != nil {
		return nil, err
	}
	audit, checkin := make([]byte, 32), make([]byte, 32)
	if _, err := rand.Read(audit); err != nil {
		return nil, err
	}
	if _, err := rand.Read(checkin); err != nil {
		return nil, err
	}
	return map[string]string{
		"NXG_JWT_KEYS":    string(jwks),
		"NXG_MASTER_KEY":  master,
		"NXG_AUDIT_KEY":   base64.StdEncoding.EncodeToString(audit),
		"NXG_CHECKIN_KEY": base64.StdEncoding.EncodeToString(checkin),
	}, nil
}

// AIEnv is the configuration of the outside AI services for tests that
// build a whole configuration but never call them: every URL points at a
// closed port, so a call that did happen would fail rather than reach
// anything.
func AIEnv() map[string]string {
	env := map[string]string{}
	for _, name := range []string{"WORKOUTPLANNER", "MEALDETECTOR", "MEALPLANNER"} {
		env["NXG_"+name+"_URL"] = "http://127.0.0.1:1"
		env["NXG_"+name+"_API_KEY"] = "test-" + strings.ToLower(name) + "-key"
	}
	return env
}
