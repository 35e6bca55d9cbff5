package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuthConfig(t *testing.T) {
	t.Parallel()

	problemsOf := func(t *testing.T, environ map[string]string) string {
		t.Helper()
		_, err := Parse(environ)
		if err == nil {
			return ""
		}
		return err.Error()
	}

	t.Run("KeysFromFiles", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		jwks, master := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "master")
		if err := os.WriteFile(jwks, []byte(testAuthEnv["NXG_JWT_KEYS"]), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(master, []byte(testAuthEnv["NXG_MASTER_KEY"]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse(with(map[string]string{
			"NXG_JWT_KEYS": "", "NXG_JWT_KEYS_FILE": jwks,
			"NXG_MASTER_KEY": "", "NXG_MASTER_KEY_FILE": master,
		}))
		if err != nil {
			t.Fatal(err)
		}
		set, err := cfg.Auth.JWTKeySet()
		if err != nil || string(set) != testAuthEnv["NXG_JWT_KEYS"] {
			t.Fatalf("key set from file = %q, %v", set, err)
		}
		if key, err := cfg.Auth.AuditKeyBytes(); err != nil || len(key) != 32 {
			t.Fatalf("audit key = %d bytes, %v", len(key), err)
		}
	})

	cases := []struct {
		name, want string
		set        map[string]string
	}{
		{"JWTKeysMissing", "NXG_JWT_KEYS: required", map[string]string{"NXG_JWT_KEYS": ""}},
		{"JWTKeysTwice", "NXG_JWT_KEYS and NXG_JWT_KEYS_FILE: set one, not both", map[string]string{"NXG_JWT_KEYS_FILE": "/x"}},
		{"JWTKeysNotAKeySet", "NXG_JWT_KEYS: ", map[string]string{"NXG_JWT_KEYS": `{"keys":[]}`}},
		{"JWTKeysFileMissing", "NXG_JWT_KEYS_FILE: ", map[string]string{"NXG_JWT_KEYS": "", "NXG_JWT_KEYS_FILE": "/nonexistent/jwks.json"}},
		{"MasterKeyMissing", "NXG_MASTER_KEY: required", map[string]string{"NXG_MASTER_KEY": ""}},
		{"MasterKeyShort", "NXG_MASTER_KEY: ", map[string]string{"NXG_MASTER_KEY": "k1:c2hvcnQ="}},
		{"AuditKeyShort", "NXG_AUDIT_KEY: must be 32 bytes", map[string]string{"NXG_AUDIT_KEY": "c2hvcnQ="}},
		{"TrustedProxyNotCIDR", `NXG_TRUSTED_PROXIES: "10.0.0.1" is not a CIDR`, map[string]string{"NXG_TRUSTED_PROXIES": "10.0.0.0/8,10.0.0.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := problemsOf(t, with(c.set))
			if !strings.Contains(got, c.want) {
				t.Fatalf("problems %q lack %q", got, c.want)
			}
			for _, secret := range []string{testAuthEnv["NXG_AUDIT_KEY"], "c2hvcnQ="} {
				if strings.Contains(got, secret) {
					t.Fatalf("problems reveal key material: %q", got)
				}
			}
		})
	}
}
