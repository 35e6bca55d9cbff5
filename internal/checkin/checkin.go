// Package checkin issues and verifies the rotating QR codes shown on a
// branch's entrance, and answers whether a branch is open at a given instant.
//
// A check-in code is a compact, URL-safe string
//
//	nxg1.<branch id: base64url, 16 bytes>.<window start: unix seconds>.<mac: base64url, 16 bytes>
//
// about 61 characters long, so it fits a small QR code. The MAC is
// HMAC-SHA-256, truncated to 128 bits, under a key derived with HKDF from a
// server secret; it covers the version, the branch id and the window start,
// so a code cannot be forged, moved to another branch or re-dated. A new code
// is issued every Rotation (30 s) and each code is accepted for Validity
// (60 s) from the start of its window, so a code scanned just before the
// screen rotates still works.
package checkin

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

const (
	// Rotation is how often the code for a branch changes.
	Rotation = 30 * time.Second
	// Validity is how long a code is accepted, counted from the start of
	// its window.
	Validity = 60 * time.Second
	// MaxSkew is how far in the future a code's window may start and still
	// be accepted (clock differences between server instances).
	MaxSkew = 5 * time.Second
	// MinSecretSize is the smallest server secret NewCodes accepts.
	MinSecretSize = 32
	// MaxPayloadSize bounds the input Verify is willing to parse.
	MaxPayloadSize = 200

	// Field is the request field that Verify's errors name.
	Field = "qr_payload"

	// The messages of Verify's errors, one per kind of failure.
	MsgMalformed    = "is not an NXG check-in code"
	MsgInvalid      = "is not valid"
	MsgExpired      = "has expired; scan the code on the entrance again"
	MsgOtherBranch  = "belongs to another branch"
	MsgBranchClosed = "the branch is closed now"
)

const (
	prefix    = "nxg1"
	version   = byte(1)
	hkdfInfo  = "nxg-checkin/v1"
	keySize   = 32
	macSize   = 16
	rotSecs   = int64(Rotation / time.Second)
	idB64Len  = 22 // base64url, unpadded, of 16 bytes
	macB64Len = 22
)

var b64 = base64.RawURLEncoding.Strict()

// Codes issues and verifies check-in codes. It is safe for concurrent use.
type Codes struct {
	key []byte
	now func() time.Time
}

// NewCodes derives its HMAC key from secret (at least MinSecretSize bytes)
// with HKDF-SHA-256 and info "nxg-checkin/v1", and reads the time from now
// (nil means time.Now).
func NewCodes(secret []byte, now func() time.Time) (*Codes, error) {
	if len(secret) < MinSecretSize {
		return nil, fmt.Errorf("checkin: secret is %d bytes, need at least %d", len(secret), MinSecretSize)
	}
	key, err := hkdf.Key(sha256.New, secret, nil, hkdfInfo, keySize)
	if err != nil {
		return nil, fmt.Errorf("checkin: derive key: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Codes{key: key, now: now}, nil
}

// Issue returns the payload for the current window of branchID and the
// instant it stops being accepted (window start + Validity).
func (c *Codes) Issue(branchID uuid.UUID) (payload string, expiresAt time.Time) {
	w := windowStart(c.now())
	mac := c.mac(branchID, w)
	var sb strings.Builder
	sb.Grow(len(prefix) + 3 + idB64Len + 20 + macB64Len)
	sb.WriteString(prefix)
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(branchID[:]))
	sb.WriteByte('.')
	sb.WriteString(strconv.FormatInt(w, 10))
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(mac))
	return sb.String(), time.Unix(w, 0).Add(Validity)
}

// Verify checks a scanned payload for branchID. Every failure is an
// InvalidArgument *apperr.Error on field "qr_payload", checked in this order:
// MsgMalformed (not shaped like a code), MsgInvalid (bad MAC; nothing more is
// revealed), MsgOtherBranch (genuine code of another branch), MsgExpired
// (window older than Validity, or starting more than MaxSkew in the future).
func (c *Codes) Verify(branchID uuid.UUID, payload string) error {
	embedded, w, mac, ok := parse(payload)
	if !ok {
		return apperr.InvalidArgument(Field, MsgMalformed)
	}
	if !hmac.Equal(mac, c.mac(embedded, w)) {
		return apperr.InvalidArgument(Field, MsgInvalid)
	}
	if embedded != branchID {
		return apperr.InvalidArgument(Field, MsgOtherBranch)
	}
	// Only windows we issued get here, so the arithmetic cannot overflow.
	now := c.now()
	start := time.Unix(w, 0)
	if start.Sub(now) > MaxSkew || !now.Before(start.Add(Validity)) {
		return apperr.InvalidArgument(Field, MsgExpired)
	}
	return nil
}

// mac is HMAC-SHA-256(key, version || branch id || window start as int64 BE),
// truncated to macSize bytes. The input has a fixed length, so it is
// unambiguous.
func (c *Codes) mac(branchID uuid.UUID, window int64) []byte {
	var msg [1 + 16 + 8]byte
	msg[0] = version
	copy(msg[1:17], branchID[:])
	binary.BigEndian.PutUint64(msg[17:], uint64(window))
	h := hmac.New(sha256.New, c.key)
	h.Write(msg[:])
	return h.Sum(nil)[:macSize]
}

// parse splits a payload into its parts, accepting only the exact form Issue
// produces (strict base64, canonical decimal), so that no two strings carry
// the same code.
func parse(payload string) (branchID uuid.UUID, window int64, mac []byte, ok bool) {
	if len(payload) == 0 || len(payload) > MaxPayloadSize {
		return uuid.UUID{}, 0, nil, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 4 || parts[0] != prefix {
		return uuid.UUID{}, 0, nil, false
	}
	if len(parts[1]) != idB64Len || len(parts[3]) != macB64Len {
		return uuid.UUID{}, 0, nil, false
	}
	id, err := b64.DecodeString(parts[1])
	if err != nil || len(id) != len(branchID) {
		return uuid.UUID{}, 0, nil, false
	}
	copy(branchID[:], id)
	window, err = strconv.ParseInt(parts[2], 10, 64)
	if err != nil || strconv.FormatInt(window, 10) != parts[2] {
		return uuid.UUID{}, 0, nil, false
	}
	mac, err = b64.DecodeString(parts[3])
	if err != nil || len(mac) != macSize {
		return uuid.UUID{}, 0, nil, false
	}
	return branchID, window, mac, true
}

// windowStart returns the unix second at which t's Rotation window begins.
func windowStart(t time.Time) int64 {
	s := t.Unix()
	m := s % rotSecs
	if m < 0 {
		m += rotSecs
	}
	return s - m
}

// Interval is one opening interval of a branch: on ISO Weekday (1 = Monday
// … 7 = Sunday) from Opens up to, not including, Closes, both in minutes
// since local midnight; Closes may be 1440 (24:00). A night that runs past
// midnight is two intervals, one on each day.
type Interval struct {
	Weekday       int
	Opens, Closes int
}

// Valid reports whether the interval is well formed: weekday 1..7 and
// 0 <= Opens < Closes <= 1440.
func (i Interval) Valid() bool {
	return i.Weekday >= 1 && i.Weekday <= 7 && i.Opens >= 0 && i.Opens < i.Closes && i.Closes <= 24*60
}

// OpenAt reports whether a branch with these intervals, in IANA zone tz, is
// open at instant t. It reads the local wall clock of t in tz (nil tz means
// UTC), so on DST days the hours follow the clock on the wall: the skipped
// hour of spring-forward never occurs, and the repeated hour of fall-back is
// judged by its wall time both times. Malformed intervals never match.
func OpenAt(intervals []Interval, tz *time.Location, t time.Time) bool {
	if tz == nil {
		tz = time.UTC
	}
	local := t.In(tz)
	wd := int(local.Weekday())
	if wd == 0 {
		wd = 7
	}
	minute := local.Hour()*60 + local.Minute()
	for _, iv := range intervals {
		if iv.Valid() && iv.Weekday == wd && iv.Opens <= minute && minute < iv.Closes {
			return true
		}
	}
	return false
}

// CheckOpen returns a FailedPrecondition *apperr.Error with MsgBranchClosed
// unless OpenAt reports the branch open at t.
func CheckOpen(intervals []Interval, tz *time.Location, t time.Time) error {
	if OpenAt(intervals, tz, t) {
		return nil
	}
	return apperr.FailedPrecondition(MsgBranchClosed)
}
