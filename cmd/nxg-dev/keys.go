package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// devKeys returns the dev server's signing, master and audit keys, creating
// them on first start and keeping them in the data directory afterwards:
// tokens stay valid across restarts, encrypted profiles stay readable, and
// the audit trail keeps verifying. Production keys come from a secret store.
func devKeys(dataDir string) (map[string]string, error) {
	dir := filepath.Join(dataDir, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	jwks, err := readOrCreate(filepath.Join(dir, "jwt-keys.json"), func() (string, error) {
		b, err := token.GenerateKeyRingJSON()
		return string(b), err
	})
	if err != nil {
		return nil, err
	}
	master, err := readOrCreate(filepath.Join(dir, "master-key"), func() (string, error) {
		return fieldcrypt.GenerateMasterKeySpec("dev1")
	})
	if err != nil {
		return nil, err
	}
	audit, err := readOrCreate(filepath.Join(dir, "audit-key"), randomKey)
	if err != nil {
		return nil, err
	}
	checkin, err := readOrCreate(filepath.Join(dir, "checkin-key"), randomKey)
	if err != nil {
		return nil, err
	}
	return map[string]string{"NXG_JWT_KEYS": jwks, "NXG_MASTER_KEY": master, "NXG_AUDIT_KEY": audit, "NXG_CHECKIN_KEY": checkin}, nil
}

// randomKey returns 32 random bytes in standard base64.
func randomKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// readOrCreate returns the file's content, writing make's result to it
// (readable by the owner only) when it does not exist yet.
func readOrCreate(path string, make func() (string, error)) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	v, err := make()
	if err != nil {
		return "", err
	}
	// O_EXCL: when two dev servers start together, one writes and the
	// other reads what it wrote.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readOrCreate(path, make)
	}
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(v + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return v, f.Close()
}
