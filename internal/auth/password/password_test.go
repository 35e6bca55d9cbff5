package password

import (
	"context"
	"encoding/base64"
	"errors"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// cheapParams keep tests fast; the real cost is covered by the tests that
// use DefaultParams explicitly.
var cheapParams = Params{MemoryKiB: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func cheapHasher(t testing.TB) *Hasher {
	t.Helper()
	return NewHasher(Options{Params: cheapParams, Concurrency: 4, MaxWait: 10 * time.Second})
}

// Known answers from the reference implementation (the argon2 command of
// phc-winner-argon2, 20171227):
//
//	echo -n "correct horse battery staple" | argon2 nxgsaltnxgsalt16 -id -t 2 -k 19456 -p 1 -l 32 -e
//	echo -n "hunter2hunter2" | argon2 othersaltvalue -id -t 3 -k 4096 -p 2 -l 24 -e
var knownAnswers = []struct{ password, encoded string }{
	{"correct horse battery staple", "$argon2id$v=19$m=19456,t=2,p=1$bnhnc2FsdG54Z3NhbHQxNg$gmo3x6pgkN4+Vqy67Z2S+Xba0L+NrXyGwGQ9MiRGjEA"},
	{"hunter2hunter2", "$argon2id$v=19$m=4096,t=3,p=2$b3RoZXJzYWx0dmFsdWU$/Af74eM/0MdZz+56wNyJmSHYNNecSx5G"},
}

func TestDefaultParams(t *testing.T) {
	t.Parallel()
	want := Params{MemoryKiB: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
	if got := DefaultParams(); got != want {
		t.Fatalf("DefaultParams() = %+v, want %+v", got, want)
	}
}

func TestNewHasher(t *testing.T) {
	t.Parallel()
	t.Run("ZeroOptionsTakeDefaults", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{})
		if h.params != DefaultParams() {
			t.Errorf("params = %+v, want defaults", h.params)
		}
		if h.size != int64(runtime.NumCPU()) {
			t.Errorf("concurrency = %d, want NumCPU = %d", h.size, runtime.NumCPU())
		}
		if h.maxWait != 250*time.Millisecond {
			t.Errorf("maxWait = %v, want 250ms", h.maxWait)
		}
	})
	t.Run("ZeroFieldsTakeDefaults", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{Params: Params{MemoryKiB: 1024}})
		want := DefaultParams()
		want.MemoryKiB = 1024
		if h.params != want {
			t.Errorf("params = %+v, want %+v", h.params, want)
		}
	})
	t.Run("ParamsAboveCapsPanic", func(t *testing.T) {
		t.Parallel()
		for _, p := range []Params{
			{MemoryKiB: 1<<20 + 1},
			{Time: 33},
			{Threads: 65},
			{KeyLen: 8},
			{SaltLen: 4},
		} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("NewHasher(%+v) did not panic", p)
					}
				}()
				NewHasher(Options{Params: p})
			}()
		}
	})
}

func TestHash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("VerifiesCorrectPassword", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		enc, err := h.Hash(ctx, "s3cret-passphrase")
		if err != nil {
			t.Fatal(err)
		}
		ok, err := h.Verify(ctx, "s3cret-passphrase", enc)
		if err != nil || !ok {
			t.Fatalf("Verify(right password) = %v, %v; want true, nil", ok, err)
		}
	})
	t.Run("RejectsWrongPassword", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		enc, err := h.Hash(ctx, "s3cret-passphrase")
		if err != nil {
			t.Fatal(err)
		}
		for _, wrong := range []string{"s3cret-passphrasE", "s3cret-passphras", "", "S3CRET-PASSPHRASE"} {
			ok, err := h.Verify(ctx, wrong, enc)
			if err != nil || ok {
				t.Errorf("Verify(%q) = %v, %v; want false, nil", wrong, ok, err)
			}
		}
	})
	t.Run("SaltsDiffer", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		a, err := h.Hash(ctx, "same password")
		if err != nil {
			t.Fatal(err)
		}
		b, err := h.Hash(ctx, "same password")
		if err != nil {
			t.Fatal(err)
		}
		if a == b {
			t.Fatalf("two hashes of one password are equal: %s", a)
		}
		if strings.Split(a, "$")[4] == strings.Split(b, "$")[4] {
			t.Fatalf("two hashes share a salt: %s, %s", a, b)
		}
	})
	t.Run("PHCFormatWithDefaultParams", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{})
		enc, err := h.Hash(ctx, "correct horse battery staple")
		if err != nil {
			t.Fatal(err)
		}
		// 16-byte salt → 22 base64 chars, 32-byte key → 43, no padding.
		re := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
		if !re.MatchString(enc) {
			t.Fatalf("Hash = %q, does not match %s", enc, re)
		}
		ok, err := h.Verify(ctx, "correct horse battery staple", enc)
		if err != nil || !ok {
			t.Fatalf("Verify = %v, %v; want true, nil", ok, err)
		}
		if h.NeedsRehash(enc) {
			t.Error("NeedsRehash(fresh default hash) = true")
		}
	})
	t.Run("EmptyAndLongPasswords", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		for _, pw := range []string{"", strings.Repeat("ж", 128), "with\x00nul"} {
			enc, err := h.Hash(ctx, pw)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := h.Verify(ctx, pw, enc); err != nil || !ok {
				t.Errorf("Verify(%q) = %v, %v; want true, nil", pw, ok, err)
			}
		}
	})
}

func TestVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("OtherParamsReadFromString", func(t *testing.T) {
		t.Parallel()
		other := NewHasher(Options{Params: Params{MemoryKiB: 512, Time: 3, Threads: 2, SaltLen: 8, KeyLen: 24}})
		enc, err := other.Hash(ctx, "pa55word-other")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(enc, "$argon2id$v=19$m=512,t=3,p=2$") {
			t.Fatalf("Hash = %q, want m=512,t=3,p=2", enc)
		}
		h := cheapHasher(t)
		if ok, err := h.Verify(ctx, "pa55word-other", enc); err != nil || !ok {
			t.Fatalf("Verify = %v, %v; want true, nil", ok, err)
		}
		if ok, err := h.Verify(ctx, "pa55word-othe", enc); err != nil || ok {
			t.Fatalf("Verify(wrong) = %v, %v; want false, nil", ok, err)
		}
	})
	t.Run("ReferenceImplementationVectors", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		for _, ka := range knownAnswers {
			if ok, err := h.Verify(ctx, ka.password, ka.encoded); err != nil || !ok {
				t.Errorf("Verify(%q, %q) = %v, %v; want true, nil", ka.password, ka.encoded, ok, err)
			}
			if ok, err := h.Verify(ctx, ka.password+"x", ka.encoded); err != nil || ok {
				t.Errorf("Verify(wrong, %q) = %v, %v; want false, nil", ka.encoded, ok, err)
			}
		}
	})
	t.Run("MalformedIsErrorNotPanic", func(t *testing.T) {
		t.Parallel()
		salt := base64.RawStdEncoding.EncodeToString([]byte("0123456789abcdef"))
		key := base64.RawStdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
		ok := func(params string) string { return "$argon2id$v=19$" + params + "$" + salt + "$" + key }
		cases := map[string]string{
			"Empty":              "",
			"Dollar":             "$",
			"Bcrypt":             "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
			"Argon2i":            "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
			"Argon2d":            "$argon2d$v=19$m=64,t=1,p=1$" + salt + "$" + key,
			"UpperCaseAlg":       "$ARGON2ID$v=19$m=64,t=1,p=1$" + salt + "$" + key,
			"OldVersion":         "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
			"NoVersion":          "$argon2id$m=64,t=1,p=1$" + salt + "$" + key,
			"MissingKey":         "$argon2id$v=19$m=64,t=1,p=1$" + salt,
			"EmptyKey":           "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$",
			"MissingSaltAndKey":  "$argon2id$v=19$m=64,t=1,p=1",
			"ExtraField":         ok("m=64,t=1,p=1") + "$extra",
			"NoLeadingDollar":    strings.TrimPrefix(ok("m=64,t=1,p=1"), "$"),
			"BadBase64Salt":      "$argon2id$v=19$m=64,t=1,p=1$!!!not-base64!!!$" + key,
			"BadBase64Key":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$%%%%",
			"PaddedBase64Key":    "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")),
			"URLBase64Key":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.Repeat("_-", 22),
			"NewlineInKey":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key[:10] + "\n" + key[10:],
			"ShortSalt":          "$argon2id$v=19$m=64,t=1,p=1$" + base64.RawStdEncoding.EncodeToString([]byte("abcd")) + "$" + key,
			"ShortKey":           "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + base64.RawStdEncoding.EncodeToString([]byte("12345678")),
			"MZero":              ok("m=0,t=1,p=1"),
			"MBelowEightPerLane": ok("m=15,t=1,p=2"),
			"MAboveOneGiB":       ok("m=1048577,t=1,p=1"),
			"MMaxUint32":         ok("m=4294967295,t=1,p=1"),
			"MOverflow":          ok("m=99999999999999999999,t=1,p=1"),
			"MNegative":          ok("m=-64,t=1,p=1"),
			"MPlus":              ok("m=+64,t=1,p=1"),
			"MEmpty":             ok("m=,t=1,p=1"),
			"MHex":               ok("m=0x40,t=1,p=1"),
			"MSpace":             ok("m= 64,t=1,p=1"),
			"TZero":              ok("m=64,t=0,p=1"),
			"THuge":              ok("m=64,t=4000000000,p=1"),
			"PZero":              ok("m=64,t=1,p=0"),
			"PHuge":              ok("m=4096,t=1,p=255"),
			"PAboveUint8":        ok("m=4096,t=1,p=256"),
			"ParamsReordered":    ok("t=1,m=64,p=1"),
			"ParamsMissing":      ok("m=64,t=1"),
			"ParamsExtra":        ok("m=64,t=1,p=1,k=1"),
			"ParamsKeyID":        ok("m=64,t=1,p=1,keyid=abc"),
			"TooLong":            ok("m=64,t=1,p=1") + strings.Repeat("A", 1000),
		}
		h := cheapHasher(t)
		h.testHookInSlot = func() { t.Error("argon2 ran for a malformed hash") }
		for name, enc := range cases {
			t.Run(name, func(t *testing.T) {
				ok, err := h.Verify(ctx, "password", enc)
				if err == nil || ok {
					t.Fatalf("Verify(%q) = %v, %v; want false and an error", enc, ok, err)
				}
				if !errors.Is(err, ErrMalformedHash) {
					t.Errorf("error %v does not wrap ErrMalformedHash", err)
				}
				if _, isApp := apperr.As(err); isApp {
					t.Errorf("error %v is an *apperr.Error; a corrupted row is an internal fault", err)
				}
				if !h.NeedsRehash(enc) {
					t.Errorf("NeedsRehash(%q) = false for a malformed hash", enc)
				}
			})
		}
		// The same shape with sane values parses, so the cases above fail for
		// the reason they name.
		if _, err := h.parse(ok("m=64,t=1,p=1")); err != nil {
			t.Fatalf("control case: %v", err)
		}
	})
}

func TestNeedsRehash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := NewHasher(Options{Params: Params{MemoryKiB: 256, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}})
	hashWith := func(t *testing.T, p Params) string {
		t.Helper()
		enc, err := NewHasher(Options{Params: p}).Hash(ctx, "rehash-me-please")
		if err != nil {
			t.Fatal(err)
		}
		return enc
	}
	cases := []struct {
		name string
		p    Params
		want bool
	}{
		{"Same", h.params, false},
		{"LessMemory", Params{MemoryKiB: 128, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}, true},
		{"FewerPasses", Params{MemoryKiB: 256, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, true},
		{"ShorterSalt", Params{MemoryKiB: 256, Time: 2, Threads: 1, SaltLen: 8, KeyLen: 32}, true},
		{"ShorterKey", Params{MemoryKiB: 256, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 16}, true},
		{"Stronger", Params{MemoryKiB: 512, Time: 3, Threads: 2, SaltLen: 32, KeyLen: 64}, false},
		{"OtherLanes", Params{MemoryKiB: 256, Time: 2, Threads: 4, SaltLen: 16, KeyLen: 32}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := h.NeedsRehash(hashWith(t, c.p)); got != c.want {
				t.Errorf("NeedsRehash(hash with %+v) = %v, want %v", c.p, got, c.want)
			}
		})
	}
	t.Run("DefaultHasherVsWeakHash", func(t *testing.T) {
		t.Parallel()
		def := NewHasher(Options{})
		if !def.NeedsRehash(hashWith(t, cheapParams)) {
			t.Error("default hasher: NeedsRehash(cheap hash) = false")
		}
		if def.NeedsRehash(knownAnswers[0].encoded) {
			t.Error("default hasher: NeedsRehash(default-cost reference hash) = true")
		}
	})
}

// holdSlots takes n units of h's semaphore and returns their release.
func holdSlots(t *testing.T, h *Hasher, n int64) (release func()) {
	t.Helper()
	if !h.sem.TryAcquire(n) {
		t.Fatalf("could not take %d slots", n)
	}
	var once sync.Once
	release = func() { once.Do(func() { h.sem.Release(n) }) }
	t.Cleanup(release)
	return release
}

func assertBusy(t *testing.T, err error) {
	t.Helper()
	e, ok := apperr.As(err)
	if !ok {
		t.Fatalf("error = %v, want an *apperr.Error", err)
	}
	if e.Code != apperr.CodeResourceExhausted {
		t.Errorf("Code = %v, want CodeResourceExhausted", e.Code)
	}
	if e.RetryAfter <= 0 {
		t.Errorf("RetryAfter = %v, want > 0", e.RetryAfter)
	}
	if e.Message != "server is busy; retry shortly" {
		t.Errorf("Message = %q", e.Message)
	}
	if !errors.Is(err, ErrBusy) {
		t.Errorf("error %v does not wrap ErrBusy", err)
	}
}

func TestConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("BusyWhenSlotHeldThenRecovers", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{Params: cheapParams, Concurrency: 1, MaxWait: 10 * time.Millisecond})
		enc, err := h.Hash(ctx, "before-the-rush")
		if err != nil {
			t.Fatal(err)
		}
		release := holdSlots(t, h, 1)

		start := time.Now()
		_, err = h.Hash(ctx, "during-the-rush")
		assertBusy(t, err)
		if waited := time.Since(start); waited > 5*time.Second {
			t.Errorf("busy Hash waited %v, want about MaxWait", waited)
		}
		ok, err := h.Verify(ctx, "before-the-rush", enc)
		assertBusy(t, err)
		if ok {
			t.Error("Verify returned true while busy")
		}
		assertBusy(t, h.VerifyUnknown(ctx, "anything"))

		release()
		if _, err := h.Hash(ctx, "after-the-rush"); err != nil {
			t.Fatalf("Hash after release: %v", err)
		}
		if ok, err := h.Verify(ctx, "before-the-rush", enc); err != nil || !ok {
			t.Fatalf("Verify after release = %v, %v; want true, nil", ok, err)
		}
	})
	t.Run("BusyWhileARealHashRuns", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{Params: cheapParams, Concurrency: 1, MaxWait: 10 * time.Millisecond})
		inSlot, proceed := make(chan struct{}), make(chan struct{})
		var first atomic.Bool
		first.Store(true)
		h.testHookInSlot = func() {
			if first.CompareAndSwap(true, false) {
				close(inSlot)
				<-proceed
			}
		}
		done := make(chan error, 1)
		go func() {
			_, err := h.Hash(ctx, "slow one")
			done <- err
		}()
		<-inSlot
		_, err := h.Hash(ctx, "second caller")
		assertBusy(t, err)
		close(proceed)
		if err := <-done; err != nil {
			t.Fatalf("first Hash: %v", err)
		}
		if _, err := h.Hash(ctx, "third caller"); err != nil {
			t.Fatalf("Hash after the first finished: %v", err)
		}
	})
	t.Run("ContextCancelledWhileWaiting", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{Params: cheapParams, Concurrency: 1, MaxWait: time.Minute})
		holdSlots(t, h, 1)
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(20*time.Millisecond, cancel)
		_, err := h.Hash(cctx, "impatient")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
		if _, isApp := apperr.As(err); isApp {
			t.Errorf("cancellation reported as %v, want the bare ctx error", err)
		}
	})
	t.Run("ContextDeadlineBeforeMaxWait", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{Params: cheapParams, Concurrency: 1, MaxWait: time.Minute})
		holdSlots(t, h, 1)
		dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		_, err := h.Verify(dctx, "x", knownAnswers[1].encoded)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("ContextAlreadyCancelled", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		h.testHookInSlot = func() { t.Error("argon2 ran for a cancelled context") }
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := h.Hash(cctx, "too late"); !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	})
	t.Run("InFlightNeverExceedsConcurrency", func(t *testing.T) {
		t.Parallel()
		const limit, callers = 2, 12
		h := NewHasher(Options{Params: cheapParams, Concurrency: limit, MaxWait: time.Minute})
		var inFlight, peak atomic.Int32
		h.testHookInSlot = func() {
			n := inFlight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond) // make overlap likely
			inFlight.Add(-1)
		}
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for range callers {
			wg.Go(func() {
				_, err := h.Hash(ctx, "crowd")
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("Hash: %v", err)
			}
		}
		if p := peak.Load(); p > limit || p < 1 {
			t.Fatalf("peak in-flight = %d, want 1..%d", p, limit)
		}
		if got := h.runs.Load(); got != callers {
			t.Fatalf("argon2 runs = %d, want %d", got, callers)
		}
	})
	t.Run("CostlierStoredHashTakesMoreSlots", func(t *testing.T) {
		t.Parallel()
		// Base cost 64 KiB, 4 slots: a 256 KiB hash needs all 4.
		h := NewHasher(Options{Params: cheapParams, Concurrency: 4, MaxWait: 10 * time.Millisecond})
		big, err := NewHasher(Options{Params: Params{MemoryKiB: 256, Time: 1, Threads: 1}}).Hash(ctx, "big-one")
		if err != nil {
			t.Fatal(err)
		}
		if w := h.weight(256); w != 4 {
			t.Fatalf("weight(256 KiB) = %d, want 4", w)
		}
		if w := h.weight(1 << 20); w != 4 {
			t.Fatalf("weight(1 GiB) = %d, want capped at 4", w)
		}
		if w := h.weight(8); w != 1 {
			t.Fatalf("weight(8 KiB) = %d, want 1", w)
		}
		release := holdSlots(t, h, 1)
		_, err = h.Verify(ctx, "big-one", big)
		assertBusy(t, err)
		if _, err := h.Hash(ctx, "small-one"); err != nil {
			t.Fatalf("default-cost Hash with 3 free slots: %v", err)
		}
		release()
		if ok, err := h.Verify(ctx, "big-one", big); err != nil || !ok {
			t.Fatalf("Verify after release = %v, %v; want true, nil", ok, err)
		}
	})
}

func TestVerifyUnknown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("RunsArgon2WithHashersParams", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		before := h.runs.Load()
		for _, pw := range []string{"", "password", "correct horse battery staple"} {
			if err := h.VerifyUnknown(ctx, pw); err != nil {
				t.Fatalf("VerifyUnknown(%q) = %v", pw, err)
			}
		}
		if got := h.runs.Load() - before; got != 3 {
			t.Fatalf("argon2 ran %d times for 3 VerifyUnknown calls", got)
		}
		// The dummy costs what a real hash of this hasher costs.
		ph, err := h.parse(h.dummy)
		if err != nil {
			t.Fatalf("dummy hash does not parse: %v", err)
		}
		if ph.memory != cheapParams.MemoryKiB || ph.passes != cheapParams.Time || ph.threads != cheapParams.Threads ||
			len(ph.salt) != int(cheapParams.SaltLen) || len(ph.key) != int(cheapParams.KeyLen) {
			t.Fatalf("dummy hash %q does not use the hasher's params %+v", h.dummy, cheapParams)
		}
	})
	t.Run("DefaultParams", func(t *testing.T) {
		t.Parallel()
		h := NewHasher(Options{})
		if err := h.VerifyUnknown(ctx, "who-knows"); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.dummy, "$argon2id$v=19$m=19456,t=2,p=1$") {
			t.Fatalf("dummy = %q", h.dummy)
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		h := cheapHasher(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := h.VerifyUnknown(cctx, "x"); !errors.Is(err, context.Canceled) {
			t.Fatalf("VerifyUnknown = %v, want context.Canceled", err)
		}
	})
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const email = "Jane.Doe@Example.com"
	cases := []struct {
		name     string
		password string
		email    string
		wantErr  string // substring of the message; "" means accepted
	}{
		{"SevenCharsRefused", "xK9#mQ2", email, "at least 8 characters"},
		{"EightCharsOK", "xK9#mQ2v", email, ""},
		{"Empty", "", email, "at least 8 characters"},
		{"OneHundredTwentyEightOK", strings.Repeat("xK9#", 32), email, ""},
		{"OneHundredTwentyNineRefused", strings.Repeat("xK9#", 32) + "z", email, "at most 128 characters"},
		// 7 runes but 21 bytes: too short although len() is 21.
		{"SevenMultiByteRunesRefused", "日本語のパスワ", email, "at least 8 characters"},
		{"EightMultiByteRunesOK", "日本語パスワード", email, ""},
		// 128 runes, 256 bytes: accepted although len() is 256.
		{"OneHundredTwentyEightMultiByteOK", strings.Repeat("ж", 128), email, ""},
		{"OneHundredTwentyNineMultiByteRefused", strings.Repeat("ж", 129), email, "at most 128 characters"},
		{"EmojiCountedAsCharacters", "🏋️🏋️🏋️🏋️", email, ""}, // 4 × (U+1F3CB U+FE0F) = 8 runes
		{"CommonPassword", "password", email, "too common"},
		{"CommonPassword1", "password1", email, "too common"},
		{"CommonQwerty123", "qwerty123", email, "too common"},
		{"CommonUpperCase", "PASSWORD1", email, "too common"},
		{"CommonMixedCase", "QwErTy123", email, "too common"},
		{"CommonIloveyou", "iloveyou", email, "too common"},
		{"CommonDigits", "123456789", email, "too common"},
		{"EqualsEmail", "jane.doe@example.com", email, "email address"},
		{"EqualsEmailOtherCase", "JANE.DOE@EXAMPLE.COM", email, "email address"},
		{"EqualsLocalPart", "jane.doe", email, "email address"},
		{"EqualsLocalPartOtherCase", "JANE.DOE", email, "email address"},
		{"ContainsLocalPartOK", "jane.doe-lifts-2025", email, ""},
		{"NoEmail", "jane.doe", "", ""},
		{"EmailWithoutAt", "jane.doe.home", "jane.doe.home", "email address"},
		{"EmailWithEmptyLocalPartOK", "example.com-pw", "@example.com-pw", ""},
		{"ShortEmailLocalPartOK", "benchpress99", "bo@example.com", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := Check("new_password", c.password, c.email)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", c.password, err)
				}
				return
			}
			e, ok := apperr.As(err)
			if !ok {
				t.Fatalf("Check(%q) = %v, want an *apperr.Error", c.password, err)
			}
			if e.Code != apperr.CodeInvalidArgument || e.Field != "new_password" {
				t.Errorf("Code, Field = %v, %q; want InvalidArgument, new_password", e.Code, e.Field)
			}
			if !strings.Contains(e.Message, c.wantErr) {
				t.Errorf("Message = %q, want it to mention %q", e.Message, c.wantErr)
			}
			// ("password" itself is a word of the messages.)
			if c.password != "" && c.password != "password" && strings.Contains(e.Message, c.password) {
				t.Errorf("Message %q echoes the password", e.Message)
			}
		})
	}
	t.Run("FieldNameIsUsed", func(t *testing.T) {
		t.Parallel()
		e, ok := apperr.As(Check("password", "short", ""))
		if !ok || e.Field != "password" {
			t.Fatalf("Check(field password) = %v", e)
		}
	})
}

func TestCommonPasswordList(t *testing.T) {
	t.Parallel()
	lines := strings.Split(strings.TrimSuffix(commonPasswordsFile, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "#") || !strings.Contains(commonPasswordsFile, "MIT License") {
		t.Errorf("list does not start with a '#' header naming source and licence: %q", lines[0])
	}
	seen := make(map[string]bool)
	for i, line := range lines {
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			t.Fatalf("line %d is blank", i+1)
		case line != strings.TrimSpace(line):
			t.Errorf("line %d %q has surrounding space", i+1, line)
		case line != strings.ToLower(line):
			t.Errorf("line %d %q is not lower-case", i+1, line)
		case seen[line]:
			t.Errorf("line %d %q is a duplicate", i+1, line)
		case !utf8.ValidString(line):
			t.Errorf("line %d is not UTF-8", i+1)
		}
		seen[line] = true
	}
	set := commonPasswords()
	if len(set) < 1000 {
		t.Fatalf("list has %d entries, want ≥ 1000", len(set))
	}
	if len(set) != len(seen) {
		t.Errorf("loaded %d entries, file has %d", len(set), len(seen))
	}
	for _, pw := range []string{"password", "password1", "qwerty123", "iloveyou", "12345678"} {
		if !isCommon(pw) {
			t.Errorf("%q missing from the list", pw)
		}
	}
	t.Logf("%d common passwords", len(set))
}

func TestParseListSkipsCommentsAndBlanks(t *testing.T) {
	t.Parallel()
	got := parseList("# header\r\nalpha\r\n\n#beta\ngamma")
	if len(got) != 2 {
		t.Fatalf("parseList = %v, want alpha and gamma", got)
	}
	for _, w := range []string{"alpha", "gamma"} {
		if _, ok := got[w]; !ok {
			t.Errorf("%q missing from %v", w, got)
		}
	}
}

// fuzzLimits keep argon2 cheap whatever the fuzzer writes into m, t and p:
// anything costlier is refused as malformed, through the same code path as
// the production caps.
var fuzzLimits = limits{
	maxMemoryKiB: 256, maxTime: 2, maxThreads: 4,
	minSaltLen: 8, maxSaltLen: 64, minKeyLen: 16, maxKeyLen: 128, maxEncoded: 512,
}

func FuzzVerify(f *testing.F) {
	h := newHasher(Options{Params: cheapParams, Concurrency: 1, MaxWait: time.Minute}, fuzzLimits)
	ctx := context.Background()
	const pw = "fuzz-me-gently"
	valid, err := h.Hash(ctx, pw)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pw, valid)
	f.Add("wrong", valid)
	f.Add(pw, strings.Replace(valid, "t=1", "t=2", 1))
	f.Add(pw, strings.Replace(valid, "m=64", "m=0", 1))
	f.Add(pw, strings.Replace(valid, "m=64", "m=4294967295", 1))
	f.Add(pw, strings.Replace(valid, "p=1", "p=3", 1))
	f.Add(pw, valid[:len(valid)-5])
	f.Add(pw, valid+"$")
	for _, ka := range knownAnswers {
		f.Add(ka.password, ka.encoded)
	}
	for _, junk := range []string{"", "$", "$$$$$", "$argon2id$", "$argon2id$v=19$m=,t=,p=$$", "$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "\x00\xff$argon2id"} {
		f.Add(pw, junk)
	}
	f.Fuzz(func(t *testing.T, password, encoded string) {
		ok, err := h.Verify(ctx, password, encoded)
		if err != nil {
			if ok {
				t.Fatalf("Verify = true with error %v", err)
			}
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("Verify error %v is neither success nor malformed", err)
			}
			if !h.NeedsRehash(encoded) {
				t.Fatalf("NeedsRehash = false for malformed %q", encoded)
			}
			return
		}
		if encoded == valid && ok != (password == pw) {
			t.Fatalf("Verify(%q, valid) = %v", password, ok)
		}
		_ = h.NeedsRehash(encoded)
	})
}

func FuzzCheck(f *testing.F) {
	f.Add("password1", "jane@example.com")
	f.Add("xK9#mQ2v", "jane@example.com")
	f.Add("jane", "jane@example.com")
	f.Add("日本語のパスワード", "")
	f.Add(strings.Repeat("ж", 129), "@")
	f.Add("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", "\xff@\xfe")
	f.Fuzz(func(t *testing.T, password, email string) {
		err := Check("password", password, email)
		n := utf8.RuneCountInString(password)
		if err == nil {
			if n < MinLength || n > MaxLength {
				t.Fatalf("Check accepted %d characters", n)
			}
			if isCommon(password) {
				t.Fatalf("Check accepted common %q", password)
			}
			if email != "" && strings.EqualFold(password, strings.TrimSpace(email)) {
				t.Fatalf("Check accepted the email %q", email)
			}
			return
		}
		e, ok := apperr.As(err)
		if !ok || e.Code != apperr.CodeInvalidArgument || e.Field != "password" || e.Message == "" {
			t.Fatalf("Check error = %#v", err)
		}
	})
}

func BenchmarkHash(b *testing.B) {
	h := NewHasher(Options{})
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	h := NewHasher(Options{})
	ctx := context.Background()
	enc, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, err := h.Verify(ctx, "correct horse battery staple", enc); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkHashParallel shows throughput with every CPU hashing; callers
// beyond the slots wait (MaxWait is long here so none is refused).
func BenchmarkHashParallel(b *testing.B) {
	h := NewHasher(Options{MaxWait: time.Minute})
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
