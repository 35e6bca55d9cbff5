package config

import (
	"encoding/base64"
	"fmt"
	"os"

	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// validate checks that exactly one form of each key is given and that the
// keys parse, so a bad key stops start-up instead of the first sign-in.
func (a AuthConfig) validate() []string {
	var p []string
	if _, err := a.KeyRing(); err != nil {
		p = append(p, err.Error())
	}
	if _, err := a.MasterKeys(); err != nil {
		p = append(p, err.Error())
	}
	if a.AuditKey != "" {
		if _, err := a.AuditKeyBytes(); err != nil {
			p = append(p, err.Error())
		}
	}
	if a.CheckinKey != "" {
		if _, err := a.CheckinKeyBytes(); err != nil {
			p = append(p, err.Error())
		}
	}
	if a.JWTIssuer == "" || a.JWTAudience == "" {
		p = append(p, "NXG_JWT_ISSUER and NXG_JWT_AUDIENCE: must not be empty")
	}
	return p
}

// JWTKeySet returns the signing key set from NXG_JWT_KEYS or the file
// NXG_JWT_KEYS_FILE names.
func (a AuthConfig) JWTKeySet() ([]byte, error) {
	return inlineOrFile("NXG_JWT_KEYS", a.JWTKeys, a.JWTKeysFile)
}

// MasterKeySpec returns the master key ring from NXG_MASTER_KEY or the file
// NXG_MASTER_KEY_FILE names.
func (a AuthConfig) MasterKeySpec() (string, error) {
	b, err := inlineOrFile("NXG_MASTER_KEY", a.MasterKey, a.MasterKeyFile)
	return string(b), err
}

// KeyRing reads and parses the access-token signing keys; errors name the
// variable.
func (a AuthConfig) KeyRing() (*token.KeyRing, error) {
	jwks, err := a.JWTKeySet()
	if err != nil {
		return nil, err
	}
	ring, err := token.ParseKeyRing(jwks)
	if err != nil {
		return nil, fmt.Errorf("NXG_JWT_KEYS: %w", err)
	}
	return ring, nil
}

// MasterKeys reads and parses the master key ring; errors name the
// variable.
func (a AuthConfig) MasterKeys() (*fieldcrypt.MasterKeys, error) {
	spec, err := a.MasterKeySpec()
	if err != nil {
		return nil, err
	}
	keys, err := fieldcrypt.ParseMasterKeys(spec)
	if err != nil {
		return nil, fmt.Errorf("NXG_MASTER_KEY: %w", err)
	}
	return keys, nil
}

// CheckinKeyBytes decodes NXG_CHECKIN_KEY.
func (a AuthConfig) CheckinKeyBytes() ([]byte, error) {
	return key32("NXG_CHECKIN_KEY", a.CheckinKey)
}

// AuditKeyBytes decodes NXG_AUDIT_KEY.
func (a AuthConfig) AuditKeyBytes() ([]byte, error) {
	return key32("NXG_AUDIT_KEY", a.AuditKey)
}

// key32 decodes a 32-byte key given in standard base64; the error names
// the variable.
func key32(name string, v Secret) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(v.Reveal())
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%s: must be 32 bytes in standard base64 (e.g. `openssl rand -base64 32`)", name)
	}
	return b, nil
}

func inlineOrFile(name string, inline Secret, file string) ([]byte, error) {
	switch {
	case inline != "" && file != "":
		return nil, fmt.Errorf("%s and %s_FILE: set one, not both", name, name)
	case inline != "":
		return []byte(inline.Reveal()), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s_FILE: %v", name, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%s: required (or %s_FILE)", name, name)
	}
}
