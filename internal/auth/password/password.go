// Package password hashes and verifies account passwords with argon2id and
// enforces the password policy for registration and password changes.
//
// Hashing is deliberately expensive (19 MiB of memory and two passes each, by
// default), so a Hasher admits only a bounded number of hashes at once. A
// caller that cannot get a slot within a short wait is refused with a
// resource-exhausted error carrying retry advice, instead of queueing until
// its RPC deadline passes (DESIGN.md, "Security").
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/sync/semaphore"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// Params are argon2id cost parameters.
type Params struct {
	MemoryKiB uint32 // memory per hash, in KiB
	Time      uint32 // passes over the memory
	Threads   uint8  // lanes (parallelism degree)
	SaltLen   uint32 // random salt length in bytes
	KeyLen    uint32 // derived key length in bytes
}

// DefaultParams returns OWASP's minimum recommendation for argon2id:
// 19 MiB of memory, 2 passes, 1 lane, a 16-byte salt and a 32-byte key.
func DefaultParams() Params {
	return Params{MemoryKiB: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// Options configure a Hasher.
type Options struct {
	// Params for new hashes. A zero field takes its value from DefaultParams.
	Params Params
	// Concurrency is how many default-cost hashes may run at once; 0 (or
	// less) means runtime.NumCPU().
	Concurrency int
	// MaxWait bounds how long a caller may wait for a slot; 0 (or less)
	// means 250ms.
	MaxWait time.Duration
}

const (
	defaultMaxWait = 250 * time.Millisecond
	// busyRetryAfter is the retry advice sent with ErrBusy.
	busyRetryAfter = time.Second
	busyMessage    = "server is busy; retry shortly"
)

// ErrBusy is the cause of the error returned when no hashing slot frees up
// within Options.MaxWait. The error itself is an *apperr.Error with
// CodeResourceExhausted and a RetryAfter of about a second; test for it with
// errors.Is(err, ErrBusy).
var ErrBusy = errors.New("password: all hashing slots busy")

// ErrMalformedHash is the cause of every error that Verify returns for an
// encoded hash it cannot parse or refuses to run (for example parameters above
// the sanity caps). It signals a corrupted or foreign row, an internal fault,
// so it is deliberately not an *apperr.Error.
var ErrMalformedHash = errors.New("password: malformed argon2id hash")

// limits are the sanity caps applied to parameters read from a stored hash,
// so a corrupted (or planted) row cannot make one login burn gigabytes of
// memory or minutes of CPU. They also bound the parameters a Hasher accepts.
type limits struct {
	maxMemoryKiB uint32
	maxTime      uint32
	maxThreads   uint32
	minSaltLen   int
	maxSaltLen   int
	minKeyLen    int
	maxKeyLen    int
	maxEncoded   int // length of the whole PHC string
}

var defaultLimits = limits{
	maxMemoryKiB: 1 << 20, // 1 GiB
	maxTime:      32,
	maxThreads:   64,
	minSaltLen:   8,  // RFC 9106 recommends 16; 8 is the floor of the reference tool
	maxSaltLen:   64, // PHC string format caps salts at 48 bytes; allow a little more
	minKeyLen:    16, // a shorter key would make a wrong password match too often
	maxKeyLen:    128,
	maxEncoded:   512,
}

// Hasher hashes and verifies passwords with argon2id, running at most
// Concurrency default-cost hashes at a time.
//
// Memory: each argon2id run allocates Params.MemoryKiB (19 MiB by default) for
// its duration. The semaphore has Concurrency units and a run takes one unit
// per Params.MemoryKiB it needs (rounded up, at most all of them), so hashing
// holds at most Concurrency × Params.MemoryKiB at once (e.g. 8 × 19 MiB =
// 152 MiB) — except that a single stored hash with a bigger cost, up to the
// 1 GiB cap, runs alone with all units held.
//
// A Hasher is safe for concurrent use.
type Hasher struct {
	params  Params
	lim     limits
	sem     *semaphore.Weighted
	size    int64
	maxWait time.Duration
	// dummy is a well-formed hash with h.params of a random key nobody knows,
	// verified against by VerifyUnknown.
	dummy string
	// runs counts argon2 computations (for tests and curiosity).
	runs atomic.Int64
	// testHookInSlot, when set (only by tests), runs while a slot is held,
	// just before the argon2 computation.
	testHookInSlot func()
}

// NewHasher returns a Hasher for opts. It panics if opts.Params (after
// defaults) are outside the sanity caps, which is a configuration error.
func NewHasher(opts Options) *Hasher {
	return newHasher(opts, defaultLimits)
}

func newHasher(opts Options, lim limits) *Hasher {
	p := opts.Params
	d := DefaultParams()
	if p.MemoryKiB == 0 {
		p.MemoryKiB = d.MemoryKiB
	}
	if p.Time == 0 {
		p.Time = d.Time
	}
	if p.Threads == 0 {
		p.Threads = d.Threads
	}
	if p.SaltLen == 0 {
		p.SaltLen = d.SaltLen
	}
	if p.KeyLen == 0 {
		p.KeyLen = d.KeyLen
	}
	if err := lim.check(p.MemoryKiB, p.Time, uint32(p.Threads), int(p.SaltLen), int(p.KeyLen)); err != nil {
		panic(fmt.Sprintf("password.NewHasher: invalid params %+v: %v", p, err))
	}
	n := opts.Concurrency
	if n <= 0 {
		n = runtime.NumCPU()
	}
	wait := opts.MaxWait
	if wait <= 0 {
		wait = defaultMaxWait
	}
	h := &Hasher{
		params:  p,
		lim:     lim,
		sem:     semaphore.NewWeighted(int64(n)),
		size:    int64(n),
		maxWait: wait,
	}
	// Verifying against a random key costs exactly what verifying against a
	// real hash costs, and no password can match it, so nothing needs hashing
	// here.
	h.dummy = encode(p.MemoryKiB, p.Time, p.Threads, randomBytes(p.SaltLen), randomBytes(p.KeyLen))
	return h
}

// Hash derives a key from password with a fresh random salt and returns it in
// the PHC string format of the reference implementation:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// with salt and key in unpadded standard base64. It fails with an
// ErrBusy-caused *apperr.Error when no slot frees within MaxWait, and with
// ctx.Err() when ctx ends first.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	p := h.params
	salt := randomBytes(p.SaltLen)
	key, err := h.derive(ctx, password, salt, p.MemoryKiB, p.Time, p.Threads, p.KeyLen)
	if err != nil {
		return "", err
	}
	return encode(p.MemoryKiB, p.Time, p.Threads, salt, key), nil
}

// Verify reports whether password matches encoded, comparing in constant
// time. The parameters are read from encoded, so hashes made with other
// parameters still verify. A malformed encoded string, or one whose
// parameters exceed the sanity caps, yields an error wrapping
// ErrMalformedHash. Busy and ctx errors are as for Hash.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (bool, error) {
	ph, err := h.parse(encoded)
	if err != nil {
		return false, err
	}
	key, err := h.derive(ctx, password, ph.salt, ph.memory, ph.passes, ph.threads, uint32(len(ph.key)))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(key, ph.key) == 1, nil
}

// VerifyUnknown does the work of Verify against a fixed dummy hash made with
// h's parameters, and discards the result, so that a login for an unknown
// email costs the same as one with a wrong password. It returns only busy or
// ctx errors.
func (h *Hasher) VerifyUnknown(ctx context.Context, password string) error {
	_, err := h.Verify(ctx, password, h.dummy)
	return err
}

// NeedsRehash reports whether encoded was made with weaker parameters than
// h's (less memory, fewer passes, a shorter salt or key, or another
// algorithm or version), so that a successful login can store a fresh hash.
// A malformed encoded string needs rehashing too.
func (h *Hasher) NeedsRehash(encoded string) bool {
	ph, err := h.parse(encoded)
	if err != nil {
		return true
	}
	p := h.params
	return ph.memory < p.MemoryKiB ||
		ph.passes < p.Time ||
		len(ph.salt) < int(p.SaltLen) ||
		len(ph.key) < int(p.KeyLen)
}

// derive runs argon2id inside a slot of the semaphore.
func (h *Hasher) derive(ctx context.Context, password string, salt []byte, memory, passes uint32, threads uint8, keyLen uint32) ([]byte, error) {
	w := h.weight(memory)
	if err := h.acquire(ctx, w); err != nil {
		return nil, err
	}
	defer h.sem.Release(w)
	if h.testHookInSlot != nil {
		h.testHookInSlot()
	}
	h.runs.Add(1)
	return argon2.IDKey([]byte(password), salt, passes, memory, threads, keyLen), nil
}

// weight is the number of semaphore units a run with memory KiB takes: one
// per h.params.MemoryKiB, rounded up, and at most all of them.
func (h *Hasher) weight(memory uint32) int64 {
	base := int64(h.params.MemoryKiB)
	w := (int64(memory) + base - 1) / base
	return max(1, min(w, h.size))
}

// acquire takes w units, waiting at most h.maxWait.
func (h *Hasher) acquire(ctx context.Context, w int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.sem.TryAcquire(w) {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, h.maxWait)
	defer cancel()
	if err := h.sem.Acquire(wctx, w); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr // the caller gave up (or its deadline passed) first
		}
		e := apperr.ResourceExhausted(busyRetryAfter, busyMessage)
		e.Cause = ErrBusy
		return e
	}
	return nil
}

// phc is a parsed argon2id PHC string.
type phc struct {
	memory, passes uint32
	threads        uint8
	salt, key      []byte
}

var b64 = base64.RawStdEncoding.Strict()

func encode(memory, passes uint32, threads uint8, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, memory, passes, threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedHash, fmt.Sprintf(format, args...))
}

// parse reads "$argon2id$v=19$m=M,t=T,p=P$salt$key" strictly and checks the
// values against h's limits.
func (h *Hasher) parse(encoded string) (phc, error) {
	var ph phc
	if len(encoded) > h.lim.maxEncoded {
		return ph, malformed("longer than %d bytes", h.lim.maxEncoded)
	}
	// The base64 decoder skips CR and LF; a stored hash never has them.
	if strings.ContainsAny(encoded, "\r\n") {
		return ph, malformed("contains a line break")
	}
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" {
		return ph, malformed("want 5 '$'-separated fields, got %d", len(parts)-1)
	}
	if parts[1] != "argon2id" {
		return ph, malformed("algorithm %q, want argon2id", parts[1])
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return ph, malformed("version field %q, want v=%d", parts[2], argon2.Version)
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return ph, malformed("parameters %q, want m=,t=,p=", parts[3])
	}
	var vals [3]uint64
	for i, name := range [3]string{"m=", "t=", "p="} {
		digits, ok := strings.CutPrefix(kv[i], name)
		if !ok || digits == "" || len(digits) > 10 || strings.Trim(digits, "0123456789") != "" {
			return ph, malformed("parameter %q, want %s<number>", kv[i], name)
		}
		v, err := strconv.ParseUint(digits, 10, 32)
		if err != nil {
			return ph, malformed("parameter %q out of range", kv[i])
		}
		vals[i] = v
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return ph, malformed("salt: %v", err)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil {
		return ph, malformed("key: %v", err)
	}
	m, t, p := uint32(vals[0]), uint32(vals[1]), uint32(vals[2])
	if err := h.lim.check(m, t, p, len(salt), len(key)); err != nil {
		return ph, malformed("%v", err)
	}
	return phc{memory: m, passes: t, threads: uint8(p), salt: salt, key: key}, nil
}

// check validates argon2id parameters against the caps. It also rules out
// what argon2.IDKey would panic on (t = 0, p = 0) and memory below the
// algorithm's floor of 8 KiB per lane.
func (l limits) check(memory, passes, threads uint32, saltLen, keyLen int) error {
	switch {
	case threads < 1 || threads > l.maxThreads:
		return fmt.Errorf("p=%d outside 1..%d", threads, l.maxThreads)
	case passes < 1 || passes > l.maxTime:
		return fmt.Errorf("t=%d outside 1..%d", passes, l.maxTime)
	case memory < 8*threads || memory > l.maxMemoryKiB:
		return fmt.Errorf("m=%d KiB outside %d..%d", memory, 8*threads, l.maxMemoryKiB)
	case saltLen < l.minSaltLen || saltLen > l.maxSaltLen:
		return fmt.Errorf("salt of %d bytes outside %d..%d", saltLen, l.minSaltLen, l.maxSaltLen)
	case keyLen < l.minKeyLen || keyLen > l.maxKeyLen:
		return fmt.Errorf("key of %d bytes outside %d..%d", keyLen, l.minKeyLen, l.maxKeyLen)
	}
	return nil
}

func randomBytes(n uint32) []byte {
	b := make([]byte, n)
	// crypto/rand.Read never fails (it crashes the program irrecoverably
	// instead, since Go 1.24).
	_, _ = rand.Read(b)
	return b
}
