package fieldcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Golden vectors pin format v1: they were made once by this package with
// fixed keys, and TestGoldenVectors opens them both through the API and by
// hand with the standard library, so a change to the envelope or to the
// associated data cannot slip through unnoticed.
const (
	goldenSpec      = "golden:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0x00..0x1f
	goldenUser      = "0190a3c4-0000-7000-8000-000000000001"
	goldenColumn    = "phone"
	goldenPlaintext = "+44 20 7946 0958"
	// goldenWrappedHex wraps the data key 0x40..0x5f for goldenUser.
	goldenWrappedHex = "0106676f6c64656eec477a4795410c29ad07fe7849adbd5023e6cb510ca46f8174d2bcb84584852c9926268dd25e61d785a8054b5a35b9aa39a4d45e9082443260ea5549"
	// goldenFieldHex seals goldenPlaintext for goldenUser/goldenColumn.
	goldenFieldHex = "013b3c0b39765d8b6217ed20d2d47c4fdf58826594e84aa4705bb684f199ddfa4de8b89b44dab292a63efa365f"
)

// profileColumns are the kinds of columns the profile store encrypts.
var profileColumns = []string{"date_of_birth", "sex", "phone", "height_cm", "body_metrics"}

func goldenDataKeyBytes() []byte {
	raw := make([]byte, keySize)
	for i := range raw {
		raw[i] = byte(0x40 + i)
	}
	return raw
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newSpec returns a fresh "id:base64" master key spec.
func newSpec(t testing.TB, id string) string {
	t.Helper()
	spec, err := GenerateMasterKeySpec(id)
	if err != nil {
		t.Fatalf("GenerateMasterKeySpec(%q): %v", id, err)
	}
	return spec
}

// secretOf returns the base64 key of a one-entry spec.
func secretOf(spec string) string {
	_, secret, _ := strings.Cut(spec, ":")
	return secret
}

func mustRing(t testing.TB, specs ...string) *MasterKeys {
	t.Helper()
	m, err := ParseMasterKeys(strings.Join(specs, ","))
	if err != nil {
		t.Fatalf("ParseMasterKeys: %v", err)
	}
	return m
}

// requireDecryptError asserts err is ErrDecrypt.
func requireDecryptError(t testing.TB, err error, what string) {
	t.Helper()
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("%s: error = %v, want ErrDecrypt", what, err)
	}
}

type testBundle struct {
	ring    *MasterKeys
	primary string // the spec of the only key in ring
	userA   string
	userB   string
	keyA    *DataKey
	keyB    *DataKey
	wrapA   []byte
	wrapB   []byte
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	spec := newSpec(t, "k1")
	ring := mustRing(t, spec)
	b := &testBundle{
		ring:    ring,
		primary: spec,
		userA:   "0190a3c4-0000-7000-8000-00000000000a",
		userB:   "0190a3c4-0000-7000-8000-00000000000b",
	}
	var err error
	if b.keyA, b.wrapA, err = ring.NewDataKey(b.userA); err != nil {
		t.Fatalf("NewDataKey(A): %v", err)
	}
	if b.keyB, b.wrapB, err = ring.NewDataKey(b.userB); err != nil {
		t.Fatalf("NewDataKey(B): %v", err)
	}
	return b
}

func TestDataKey(t *testing.T) {
	t.Parallel()

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		for _, column := range profileColumns {
			for _, plaintext := range [][]byte{[]byte("1990-04-17"), {}, {0}, large} {
				sealed, err := b.keyA.Seal(column, plaintext)
				if err != nil {
					t.Fatalf("Seal(%s, %d bytes): %v", column, len(plaintext), err)
				}
				if want := len(plaintext) + 1 + nonceSize + tagSize; len(sealed) != want {
					t.Errorf("Seal(%s, %d bytes) = %d bytes, want %d", column, len(plaintext), len(sealed), want)
				}
				got, err := b.keyA.Open(column, sealed)
				if err != nil {
					t.Fatalf("Open(%s, %d bytes): %v", column, len(plaintext), err)
				}
				if !bytes.Equal(got, plaintext) {
					t.Errorf("Open(%s) returned different plaintext (%d bytes, want %d)", column, len(got), len(plaintext))
				}
			}
		}
	})

	t.Run("EmptyPlaintextIsNotNil", func(t *testing.T) {
		t.Parallel()
		// Open distinguishes a sealed empty value from NULL (nil).
		b := setup(t)
		sealed, err := b.keyA.Seal("sex", nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.keyA.Open("sex", sealed)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || len(got) != 0 {
			t.Errorf("Open of a sealed empty value = %#v, want []byte{}", got)
		}
	})

	t.Run("UnwrappedKeyOpensWhatNewKeySealed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sealed, err := b.keyA.Seal("phone", []byte("+44 20 7946 0000"))
		if err != nil {
			t.Fatal(err)
		}
		k, err := b.ring.Unwrap(b.userA, b.wrapA)
		if err != nil {
			t.Fatalf("Unwrap: %v", err)
		}
		if k.UserID() != b.userA {
			t.Errorf("UserID() = %q, want %q", k.UserID(), b.userA)
		}
		got, err := k.Open("phone", sealed)
		if err != nil || string(got) != "+44 20 7946 0000" {
			t.Errorf("Open with unwrapped key = %q, %v", got, err)
		}
	})

	t.Run("SealTwiceDiffers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s1, err := b.keyA.Seal("sex", []byte("f"))
		if err != nil {
			t.Fatal(err)
		}
		s2, err := b.keyA.Seal("sex", []byte("f"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(s1, s2) {
			t.Error("two seals of the same plaintext are equal; the nonce must be random")
		}
		if bytes.Equal(s1[1:1+nonceSize], s2[1:1+nonceSize]) {
			t.Error("two seals share a nonce")
		}
	})

	t.Run("OtherColumnFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sealed, err := b.keyA.Seal("height_cm", []byte("172"))
		if err != nil {
			t.Fatal(err)
		}
		for _, column := range []string{"weight_kg", "height_cm ", "Height_cm", "height", "height_cm/x"} {
			_, err := b.keyA.Open(column, sealed)
			requireDecryptError(t, err, "Open in column "+column)
		}
	})

	t.Run("OtherUserFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sealed, err := b.keyA.Seal("date_of_birth", []byte("1990-04-17"))
		if err != nil {
			t.Fatal(err)
		}
		// Moved to user B's row: B's data key cannot open it.
		_, err = b.keyB.Open("date_of_birth", sealed)
		requireDecryptError(t, err, "Open with another user's key")

		// Even the same key bytes bound to another user id refuse it: the
		// user id is in the associated data, not only in the key.
		raw, _, err := b.ring.unwrap(b.userA, b.wrapA)
		if err != nil {
			t.Fatal(err)
		}
		impostor, err := newDataKey(b.userB, raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = impostor.Open("date_of_birth", sealed)
		requireDecryptError(t, err, "Open with A's key bytes bound to B")
	})

	t.Run("FlippedBitFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sealed, err := b.keyA.Seal("body_metrics", []byte(`{"fat_pct":18.5}`))
		if err != nil {
			t.Fatal(err)
		}
		for i := range sealed {
			for bit := range 8 {
				tampered := bytes.Clone(sealed)
				tampered[i] ^= 1 << bit
				_, err := b.keyA.Open("body_metrics", tampered)
				requireDecryptError(t, err, fmt.Sprintf("Open with byte %d bit %d flipped", i, bit))
			}
		}
	})

	t.Run("TruncatedOrExtendedFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sealed, err := b.keyA.Seal("phone", []byte("+44 20 7946 0000"))
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(sealed) {
			_, err := b.keyA.Open("phone", sealed[:n])
			requireDecryptError(t, err, fmt.Sprintf("Open of the first %d bytes", n))
		}
		_, err = b.keyA.Open("phone", append(bytes.Clone(sealed), 0))
		requireDecryptError(t, err, "Open with a byte appended")
	})

	t.Run("NullableStrings", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sealed, err := b.keyA.SealString("phone", "")
		if err != nil || sealed != nil {
			t.Fatalf(`SealString("") = %v, %v; want nil (NULL), nil`, sealed, err)
		}
		for _, stored := range [][]byte{nil, {}} {
			s, err := b.keyA.OpenString("phone", stored)
			if err != nil || s != "" {
				t.Errorf("OpenString(%#v) = %q, %v; want \"\", nil", stored, s, err)
			}
		}
		sealed, err = b.keyA.SealString("phone", "+44 20 7946 0000")
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.keyA.OpenString("phone", sealed)
		if err != nil || s != "+44 20 7946 0000" {
			t.Errorf("OpenString = %q, %v", s, err)
		}
		_, err = b.keyA.OpenString("sex", sealed)
		requireDecryptError(t, err, "OpenString in another column")
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if _, err := b.keyA.Seal("", []byte("x")); err == nil {
			t.Error("Seal with an empty column succeeded")
		}
		if _, err := b.keyA.Open("", []byte("x")); err == nil {
			t.Error("Open with an empty column succeeded")
		}
		var nilKey *DataKey
		if _, err := nilKey.Seal("phone", []byte("x")); err == nil {
			t.Error("Seal on a nil DataKey succeeded")
		}
		if _, err := (&DataKey{}).Open("phone", []byte("x")); err == nil {
			t.Error("Open on a zero DataKey succeeded")
		}
	})

	t.Run("ConcurrentUse", func(t *testing.T) {
		t.Parallel()
		// One DataKey is shared by the goroutines of a request; run with
		// -race to check.
		b := setup(t)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					want := fmt.Sprintf("g%d-%d", g, i)
					sealed, err := b.keyA.SealString("phone", want)
					if err != nil {
						t.Error(err)
						return
					}
					if got, err := b.keyA.OpenString("phone", sealed); err != nil || got != want {
						t.Errorf("OpenString = %q, %v; want %q", got, err, want)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

func TestMasterKeys(t *testing.T) {
	t.Parallel()

	t.Run("WrappedKeyFormat", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if want := 2 + len("k1") + nonceSize + keySize + tagSize; len(b.wrapA) != want {
			t.Fatalf("wrapped key is %d bytes, want %d", len(b.wrapA), want)
		}
		if b.wrapA[0] != formatVersion || b.wrapA[1] != 2 || string(b.wrapA[2:4]) != "k1" {
			t.Errorf("wrapped key header = % x, want 01 02 'k1'", b.wrapA[:4])
		}
		if bytes.Equal(b.wrapA, b.wrapB) {
			t.Error("two users got the same wrapped key")
		}
	})

	t.Run("OtherUserCannotUnwrap", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.ring.Unwrap(b.userB, b.wrapA)
		requireDecryptError(t, err, "Unwrap of A's key as B")
		_, _, err = b.ring.Rewrap(b.userB, b.wrapA)
		requireDecryptError(t, err, "Rewrap of A's key as B")
	})

	t.Run("TamperedWrappedKeyFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for i := range b.wrapA {
			for bit := range 8 {
				tampered := bytes.Clone(b.wrapA)
				tampered[i] ^= 1 << bit
				_, err := b.ring.Unwrap(b.userA, tampered)
				if 2 <= i && i < 4 {
					// A flipped bit in the id may name another
					// (well-formed but absent) master key.
					if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrKeyNotFound) {
						t.Fatalf("Unwrap with byte %d bit %d flipped: error = %v, want ErrDecrypt or ErrKeyNotFound", i, bit, err)
					}
					continue
				}
				requireDecryptError(t, err, fmt.Sprintf("Unwrap with byte %d bit %d flipped", i, bit))
			}
		}
		for n := range len(b.wrapA) {
			_, err := b.ring.Unwrap(b.userA, b.wrapA[:n])
			requireDecryptError(t, err, fmt.Sprintf("Unwrap of the first %d bytes", n))
		}
	})

	t.Run("UnknownMasterKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		other := mustRing(t, newSpec(t, "k2"))
		_, err := other.Unwrap(b.userA, b.wrapA)
		if !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("Unwrap under a ring without k1: error = %v, want ErrKeyNotFound", err)
		}
		if !strings.Contains(err.Error(), `"k1"`) {
			t.Errorf("error %q does not name the missing master key id", err)
		}
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if _, _, err := b.ring.NewDataKey(""); err == nil {
			t.Error("NewDataKey with an empty user id succeeded")
		}
		if _, err := b.ring.Unwrap("", b.wrapA); err == nil {
			t.Error("Unwrap with an empty user id succeeded")
		}
		for _, ring := range []*MasterKeys{nil, {}} {
			if _, _, err := ring.NewDataKey(b.userA); err == nil {
				t.Errorf("NewDataKey on %v succeeded", ring)
			}
			if _, err := ring.Unwrap(b.userA, b.wrapA); err == nil {
				t.Errorf("Unwrap on %v succeeded", ring)
			}
			if ring.PrimaryID() != "" {
				t.Errorf("PrimaryID of an empty ring = %q", ring.PrimaryID())
			}
		}
	})
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldSpec, newSpecStr := newSpec(t, "old"), newSpec(t, "new")
	const user, stale = "0190a3c4-0000-7000-8000-0000000000c1", "0190a3c4-0000-7000-8000-0000000000c2"

	// Before rotation: only "old" exists and wraps the users' keys.
	oldRing := mustRing(t, oldSpec)
	dek, wrapped, err := oldRing.NewDataKey(user)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := dek.SealString("phone", "+44 20 7946 0001")
	if err != nil {
		t.Fatal(err)
	}
	_, staleWrapped, err := oldRing.NewDataKey(stale)
	if err != nil {
		t.Fatal(err)
	}

	// During rotation: "new" is primary, "old" still unwraps.
	both := mustRing(t, newSpecStr, oldSpec)
	if both.PrimaryID() != "new" {
		t.Fatalf("PrimaryID() = %q, want the first listed, new", both.PrimaryID())
	}
	if got := both.IDs(); len(got) != 2 || got[0] != "new" || got[1] != "old" {
		t.Errorf("IDs() = %v, want [new old]", got)
	}
	if _, err := both.Unwrap(user, wrapped); err != nil {
		t.Fatalf("ring new,old cannot unwrap a key under old: %v", err)
	}
	rewrapped, changed, err := both.Rewrap(user, wrapped)
	if err != nil || !changed {
		t.Fatalf("Rewrap = changed %v, %v; want true, nil", changed, err)
	}
	if id, _, err := parseWrapped(rewrapped); err != nil || id != "new" {
		t.Errorf("rewrapped key is under %q (%v), want new", id, err)
	}
	again, changed, err := both.Rewrap(user, rewrapped)
	if err != nil || changed || !bytes.Equal(again, rewrapped) {
		t.Errorf("Rewrap of a key under the primary = changed %v, %v, same bytes %v; want false, nil, true",
			changed, err, bytes.Equal(again, rewrapped))
	}
	_, _, err = both.Rewrap(stale, append(bytes.Clone(staleWrapped[:len(staleWrapped)-1]), staleWrapped[len(staleWrapped)-1]^1))
	requireDecryptError(t, err, "Rewrap of a tampered key")

	// After rotation: "old" is gone; rewrapped keys still open and still
	// decrypt the data sealed before the rotation (the data key itself
	// did not change, so no field needs re-encrypting).
	newOnly := mustRing(t, newSpecStr)
	k, err := newOnly.Unwrap(user, rewrapped)
	if err != nil {
		t.Fatalf("ring new cannot unwrap the rewrapped key: %v", err)
	}
	if got, err := k.OpenString("phone", sealed); err != nil || got != "+44 20 7946 0001" {
		t.Errorf("OpenString after rotation = %q, %v", got, err)
	}
	// A key that the rotation job missed fails clearly, naming the
	// missing master key.
	_, err = newOnly.Unwrap(stale, staleWrapped)
	if !errors.Is(err, ErrKeyNotFound) || !strings.Contains(err.Error(), `"old"`) {
		t.Errorf("Unwrap of a key still under old = %v; want ErrKeyNotFound naming \"old\"", err)
	}
	if _, _, err := newOnly.Rewrap(stale, staleWrapped); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Rewrap of a key still under old = %v; want ErrKeyNotFound", err)
	}
}

func TestParseMasterKeys(t *testing.T) {
	t.Parallel()

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		a, b, c := newSpec(t, "a"), newSpec(t, "2026-01"), newSpec(t, "0123456789abcdef")
		for name, spec := range map[string]string{
			"Commas":            a + "," + b + "," + c,
			"Spaces":            " " + a + ", " + b + " ,\t" + c + " ",
			"OneLineEach":       a + "\n" + b + "\r\n" + c + "\n",
			"TrailingSeparator": a + "," + b + "," + c + ",",
		} {
			m, err := ParseMasterKeys(spec)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := m.IDs(); len(got) != 3 || got[0] != "a" || got[1] != "2026-01" || got[2] != "0123456789abcdef" {
				t.Errorf("%s: IDs() = %v", name, got)
			}
			if m.PrimaryID() != "a" {
				t.Errorf("%s: PrimaryID() = %q, want a", name, m.PrimaryID())
			}
		}
	})

	t.Run("SameSecretGivesSameKeys", func(t *testing.T) {
		t.Parallel()
		// A restarted process with the same config must unwrap what the
		// previous one wrapped.
		spec := newSpec(t, "k")
		_, wrapped, err := mustRing(t, spec).NewDataKey("u")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mustRing(t, spec).Unwrap("u", wrapped); err != nil {
			t.Errorf("a second parse of the same spec cannot unwrap: %v", err)
		}
	})

	t.Run("Rejects", func(t *testing.T) {
		t.Parallel()
		good := newSpec(t, "good")
		secret := secretOf(good)
		raw, _ := base64.StdEncoding.DecodeString(secret)
		b64 := base64.StdEncoding.EncodeToString
		for _, c := range []struct {
			name, spec, want string
		}{
			{"Empty", "", "none given"},
			{"OnlySeparators", " ,\n, ", "none given"},
			{"NoColon", secret, `entry 1 has no ":"`},
			{"EmptyID", ":" + secret, "entry 1: id is empty"},
			{"IDTooLong", "0123456789abcdefg:" + secret, "id is 17 characters"},
			{"UpperCaseID", "Prod:" + secret, "character other than a-z, 0-9 and '-' at position 1"},
			{"UnderscoreID", "prod_1:" + secret, "at position 5"},
			{"DotID", "k.1:" + secret, "at position 2"},
			{"KeyAndIDSwapped", secret + ":k1", "entry 1: id is 44 characters"},
			{"EmptyKey", "k1:", `entry 1 (id "k1"): key is empty`},
			{"KeyTooShort", "k1:" + b64(raw[:31]), "key is 31 bytes after base64 decoding; want 32"},
			{"KeyTooLong", "k1:" + b64(append(bytes.Clone(raw), 7)), "key is 33 bytes after base64 decoding; want 32"},
			{"AES128Key", "k1:" + b64(raw[:16]), "key is 16 bytes"},
			{"BadBase64", "k1:" + secret[:20] + "!" + secret[21:], "not valid standard base64 (bad data at character 21)"},
			{"URLSafeBase64", "k1:" + strings.NewReplacer("+", "-", "/", "_").Replace(b64(bytes.Repeat([]byte{0xfb, 0xff}, 16))), "not valid standard base64"},
			{"UnpaddedBase64", "k1:" + strings.TrimRight(secret, "="), "not valid standard base64"},
			{"HexKey", "k1:" + hex.EncodeToString(raw), "key is 48 bytes"},
			{"DuplicateIDs", good + "," + newSpec(t, "other") + "," + good, `entry 3: id "good" is listed twice`},
			{"BadSecondEntry", good + ",k2:" + b64(raw[:8]), `entry 2 (id "k2"): key is 8 bytes`},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				m, err := ParseMasterKeys(c.spec)
				if err == nil {
					t.Fatalf("ParseMasterKeys accepted it: %v", m)
				}
				msg := err.Error()
				t.Log(msg)
				if !strings.Contains(msg, c.want) {
					t.Errorf("error = %q, want it to contain %q", msg, c.want)
				}
				// No key material, whole or in part, in the message.
				for _, entry := range strings.Split(c.spec, ",") {
					_, key, _ := strings.Cut(entry, ":")
					for _, s := range []string{entry, key, secret} {
						if len(s) >= 8 && strings.Contains(msg, s[:8]) {
							t.Errorf("error %q contains key material %q", msg, s[:8])
						}
					}
				}
				if strings.Contains(msg, hex.EncodeToString(raw[:4])) {
					t.Errorf("error %q contains hex key material", msg)
				}
			})
		}
	})
}

func TestGenerateMasterKeySpec(t *testing.T) {
	t.Parallel()
	s1, s2 := newSpec(t, "dev"), newSpec(t, "dev")
	if !strings.HasPrefix(s1, "dev:") || len(secretOf(s1)) != 44 {
		t.Errorf("spec %q is not dev:<44 base64 characters>", s1)
	}
	if s1 == s2 {
		t.Error("two generated specs are equal")
	}
	if _, err := ParseMasterKeys(s1 + "," + strings.Replace(s2, "dev:", "dev2:", 1)); err != nil {
		t.Errorf("generated specs do not parse: %v", err)
	}
	for _, id := range []string{"", "Dev", "a_b", "0123456789abcdefg"} {
		if _, err := GenerateMasterKeySpec(id); err == nil {
			t.Errorf("GenerateMasterKeySpec(%q) succeeded", id)
		}
	}
}

func TestCryptoShredding(t *testing.T) {
	t.Parallel()
	// A ring mid-rotation, so "every key in the ring" is more than one.
	specs := []string{newSpec(t, "new"), newSpec(t, "old")}
	ring := mustRing(t, specs...)
	const user = "0190a3c4-0000-7000-8000-0000000000d1"

	values := map[string]string{
		"date_of_birth": "1990-04-17", "sex": "f", "phone": "+44 20 7946 0002",
		"height_cm": "172", "body_metrics": `{"weight_kg":61.2,"fat_pct":22.1}`,
	}
	// Sign-up: the data key lives only inside this function, as a request
	// handler's would; what outlives it is what the database stores.
	wrapped, stored := func() ([]byte, map[string][]byte) {
		dek, wrapped, err := ring.NewDataKey(user)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string][]byte{}
		for column, v := range values {
			if stored[column], err = dek.SealString(column, v); err != nil {
				t.Fatal(err)
			}
		}
		return wrapped, stored
	}()
	// Before erasure the stored wrapped key opens everything.
	k, err := ring.Unwrap(user, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	for column, v := range values {
		if got, err := k.OpenString(column, stored[column]); err != nil || got != v {
			t.Fatalf("before erasure %s = %q, %v", column, got, err)
		}
	}

	// Erasure deletes the wrapped key row. Everything left is the ring and
	// the ciphertexts (say, in a backup taken before the erasure).
	wrapped = nil

	// Every key anyone still holds fails: each master key's secret used
	// directly, each key-encryption key derived from it, fresh data keys
	// for the same user id under every master key, other users' keys.
	var candidates []*DataKey
	for _, spec := range specs {
		secret, err := base64.StdEncoding.DecodeString(secretOf(spec))
		if err != nil {
			t.Fatal(err)
		}
		kek, err := hkdf.Key(sha256.New, secret, nil, kekInfo, keySize)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range [][]byte{secret, kek} {
			c, err := newDataKey(user, raw)
			if err != nil {
				t.Fatal(err)
			}
			candidates = append(candidates, c)
		}
		id, _, _ := strings.Cut(spec, ":")
		single := mustRing(t, spec)
		if single.PrimaryID() != id {
			t.Fatalf("PrimaryID() = %q, want %q", single.PrimaryID(), id)
		}
		fresh, _, err := single.NewDataKey(user) // e.g. the id signs up again
		if err != nil {
			t.Fatal(err)
		}
		other, _, err := single.NewDataKey("0190a3c4-0000-7000-8000-0000000000d2")
		if err != nil {
			t.Fatal(err)
		}
		candidates = append(candidates, fresh, other)
	}
	for i, c := range candidates {
		for column := range values {
			_, err := c.Open(column, stored[column])
			requireDecryptError(t, err, fmt.Sprintf("candidate %d (%v) opening %s after erasure", i, c, column))
		}
	}
	// And there is no wrapped key left to unwrap.
	_, err = ring.Unwrap(user, wrapped)
	requireDecryptError(t, err, "Unwrap of the destroyed (nil) wrapped key")
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	const user = "0190a3c4-0000-7000-8000-0000000000e1"
	raw := goldenDataKeyBytes()
	dek, err := newDataKey(user, raw)
	if err != nil {
		t.Fatal(err)
	}
	spec := newSpec(t, "k1")
	masterRaw, _ := base64.StdEncoding.DecodeString(secretOf(spec))
	ring := mustRing(t, spec)

	// Every way the key bytes could be spelled in output.
	var secrets []string
	for _, key := range [][]byte{raw, masterRaw} {
		secrets = append(secrets,
			hex.EncodeToString(key[:8]), strings.ToUpper(hex.EncodeToString(key[:8])),
			base64.StdEncoding.EncodeToString(key)[:12],
			strings.Trim(fmt.Sprint(key[:8]), "[]"),
			string(key[:8]))
	}
	secrets = append(secrets, secretOf(spec))
	check := func(t *testing.T, what, out string, wants ...string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s = %q reveals key material %q", what, out, s)
			}
		}
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("%s = %q, want it to contain %q", what, out, w)
			}
		}
	}

	t.Run("Fmt", func(t *testing.T) {
		t.Parallel()
		type holder struct {
			Key  DataKey
			Ring MasterKeys
		}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			check(t, verb+" of *DataKey", fmt.Sprintf(verb, dek))
			check(t, verb+" of DataKey", fmt.Sprintf(verb, *dek))
			check(t, verb+" of *MasterKeys", fmt.Sprintf(verb, ring))
			check(t, verb+" of MasterKeys", fmt.Sprintf(verb, *ring))
			check(t, verb+" of a struct holding them", fmt.Sprintf(verb, holder{*dek, *ring}))
		}
		check(t, "%v of *DataKey", fmt.Sprintf("%v", dek), user, redacted)
		check(t, "%#v of *DataKey", fmt.Sprintf("%#v", dek), user, redacted)
		check(t, "%v of *MasterKeys", fmt.Sprintf("%v", ring), "k1", redacted)
		check(t, "%#v of *MasterKeys", fmt.Sprintf("%#v", ring), "k1", redacted)
		var nilKey *DataKey
		if got := fmt.Sprint(nilKey); got != "<nil>" {
			t.Errorf("Sprint(nil *DataKey) = %q, want <nil>", got)
		}
	})

	t.Run("Slog", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
			log := slog.New(h)
			log.Info("keys", "dek", dek, "dek_value", *dek, "ring", ring, "ring_value", *ring)
			log.Info("any", slog.Any("dek", dek), slog.Any("ring", ring))
		}
		check(t, "slog output", buf.String(), user, redacted, "k1")
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		// A wrapped key is not secret on its own, but it is never echoed.
		_, wrapped, err := ring.NewDataKey(user)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ring.Unwrap("someone-else", wrapped)
		check(t, "Unwrap error", err.Error())
		if strings.Contains(err.Error(), hex.EncodeToString(wrapped[4:12])) {
			t.Errorf("Unwrap error %q echoes the wrapped key", err)
		}
	})
}

// TestGoldenVectors opens ciphertexts made by an earlier build, through the
// API and by hand with nothing but the standard library and the documented
// format, so the format cannot drift.
func TestGoldenVectors(t *testing.T) {
	t.Parallel()
	wrapped, field := mustHex(t, goldenWrappedHex), mustHex(t, goldenFieldHex)

	t.Run("API", func(t *testing.T) {
		t.Parallel()
		k, err := mustRing(t, goldenSpec).Unwrap(goldenUser, wrapped)
		if err != nil {
			t.Fatalf("Unwrap: %v", err)
		}
		got, err := k.OpenString(goldenColumn, field)
		if err != nil || got != goldenPlaintext {
			t.Fatalf("OpenString = %q, %v; want %q", got, err, goldenPlaintext)
		}
	})

	t.Run("ByHand", func(t *testing.T) {
		t.Parallel()
		gcm := func(key []byte) cipher.AEAD {
			block, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			a, err := cipher.NewGCM(block)
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		master, _ := base64.StdEncoding.DecodeString(secretOf(goldenSpec))
		kek, err := hkdf.Key(sha256.New, master, nil, "nxg-fieldcrypt/v1/kek", 32)
		if err != nil {
			t.Fatal(err)
		}
		// version || len(id) || id || nonce || sealed key || tag
		if wrapped[0] != 1 || int(wrapped[1]) != len("golden") || string(wrapped[2:8]) != "golden" {
			t.Fatalf("wrapped header = % x", wrapped[:8])
		}
		nonce, sealed := wrapped[8:20], wrapped[20:]
		dek, err := gcm(kek).Open(nil, nonce, sealed, []byte("nxg-dek/v1/"+goldenUser))
		if err != nil {
			t.Fatalf("open wrapped key by hand: %v", err)
		}
		if !bytes.Equal(dek, goldenDataKeyBytes()) {
			t.Fatalf("unwrapped key = %x", dek)
		}
		// version || nonce || ciphertext || tag
		if field[0] != 1 {
			t.Fatalf("field version = %d", field[0])
		}
		plain, err := gcm(dek).Open(nil, field[1:13], field[13:], []byte("nxg-field/v1/"+goldenUser+"/"+goldenColumn))
		if err != nil || string(plain) != goldenPlaintext {
			t.Fatalf("open field by hand = %q, %v", plain, err)
		}
	})
}

// FuzzOpen checks that Open never panics and that arbitrary bytes never
// decrypt: the only input that opens is the genuine golden ciphertext in
// its own column. The key is fixed (not random) so that every fuzz worker
// process agrees on it.
func FuzzOpen(f *testing.F) {
	field := mustHex(f, goldenFieldHex)
	k, err := newDataKey(goldenUser, goldenDataKeyBytes())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(goldenColumn, field)
	f.Add("sex", field)
	f.Add(goldenColumn, field[:len(field)-1])
	f.Add(goldenColumn, append([]byte{2}, field[1:]...))
	f.Add(goldenColumn, []byte{})
	f.Add(goldenColumn, []byte{1})
	f.Add(goldenColumn, make([]byte, minFieldLen))
	f.Add("", field)
	f.Fuzz(func(t *testing.T, column string, data []byte) {
		plain, err := k.Open(column, data)
		if err == nil {
			if column != goldenColumn || !bytes.Equal(data, field) || string(plain) != goldenPlaintext {
				t.Fatalf("Open(%q, %x) decrypted to %q", column, data, plain)
			}
			return
		}
		if column != "" && !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Open(%q, %x): error = %v, want ErrDecrypt", column, data, err)
		}
		s, err := k.OpenString(column, data)
		if err == nil && len(data) != 0 {
			t.Fatalf("OpenString(%q, %x) decrypted to %q", column, data, s)
		}
	})
}

// FuzzUnwrap checks that Unwrap and Rewrap never panic and that arbitrary
// bytes never unwrap: the only input that opens is the genuine golden
// wrapped key for its own user.
func FuzzUnwrap(f *testing.F) {
	wrapped := mustHex(f, goldenWrappedHex)
	// A fixed second key, so the ring is the same in every worker.
	other := "other:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, keySize))
	ring := mustRing(f, goldenSpec, other)
	f.Add(goldenUser, wrapped)
	f.Add("0190a3c4-0000-7000-8000-000000000002", wrapped)
	f.Add(goldenUser, wrapped[:len(wrapped)-1])
	f.Add(goldenUser, append([]byte{1, 5}, append([]byte("other"), wrapped[8:]...)...))
	f.Add(goldenUser, append([]byte{1, 5}, append([]byte("gone1"), wrapped[8:]...)...))
	f.Add(goldenUser, append([]byte{1, 0}, wrapped[8:]...))
	f.Add(goldenUser, append([]byte{1, 255}, wrapped[2:]...))
	f.Add(goldenUser, []byte{})
	f.Add("", wrapped)
	f.Fuzz(func(t *testing.T, userID string, data []byte) {
		k, err := ring.Unwrap(userID, data)
		if err == nil {
			if userID != goldenUser || !bytes.Equal(data, wrapped) || k.UserID() != goldenUser {
				t.Fatalf("Unwrap(%q, %x) succeeded", userID, data)
			}
		} else if userID != "" && !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("Unwrap(%q, %x): error = %v, want ErrDecrypt or ErrKeyNotFound", userID, data, err)
		}
		out, changed, rerr := ring.Rewrap(userID, data)
		if (rerr == nil) != (err == nil) {
			t.Fatalf("Rewrap error %v disagrees with Unwrap error %v", rerr, err)
		}
		if rerr == nil && (changed || !bytes.Equal(out, data)) {
			t.Fatalf("Rewrap of a key under the primary changed it")
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	k, err := newDataKey(goldenUser, goldenDataKeyBytes())
	if err != nil {
		b.Fatal(err)
	}
	field := bytes.Repeat([]byte{'x'}, 64)
	b.SetBytes(int64(len(field)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal("body_metrics", field); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k, err := newDataKey(goldenUser, goldenDataKeyBytes())
	if err != nil {
		b.Fatal(err)
	}
	sealed, err := k.Seal("body_metrics", bytes.Repeat([]byte{'x'}, 64))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open("body_metrics", sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnwrap is the per-request cost of getting a user's data key
// from its stored wrapped form.
func BenchmarkUnwrap(b *testing.B) {
	ring := mustRing(b, goldenSpec)
	wrapped := mustHex(b, goldenWrappedHex)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ring.Unwrap(goldenUser, wrapped); err != nil {
			b.Fatal(err)
		}
	}
}
