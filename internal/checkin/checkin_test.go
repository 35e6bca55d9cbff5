package checkin

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// t0 starts a rotation window (a whole minute since the epoch).
var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

var (
	branchA = uuid.MustParse("0190a3c4-0000-7000-8000-00000000000a")
	branchB = uuid.MustParse("0190a3c4-0000-7000-8000-00000000000b")
	secret1 = bytes.Repeat([]byte{0x11}, 32)
	secret2 = bytes.Repeat([]byte{0x22}, 32)
)

// clock is a settable clock for one test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

func newCodes(t testing.TB, secret []byte, at time.Time) (*Codes, *clock) {
	t.Helper()
	clk := &clock{t: at}
	c, err := NewCodes(secret, clk.Now)
	if err != nil {
		t.Fatalf("NewCodes: %v", err)
	}
	return c, clk
}

// issueAt returns the payload secret would issue for branch at instant at.
func issueAt(t testing.TB, secret []byte, branch uuid.UUID, at time.Time) string {
	t.Helper()
	c, _ := newCodes(t, secret, at)
	p, _ := c.Issue(branch)
	return p
}

// wantErr checks that err is the InvalidArgument on qr_payload with msg, or
// nil when msg is empty.
func wantErr(t testing.TB, err error, msg string) {
	t.Helper()
	if msg == "" {
		if err != nil {
			t.Fatalf("Verify: unexpected error %v", err)
		}
		return
	}
	e, ok := apperr.As(err)
	if !ok {
		t.Fatalf("Verify: error %v (%T), want *apperr.Error %q", err, err, msg)
	}
	if e.Code != apperr.CodeInvalidArgument || e.Field != Field || e.Message != msg {
		t.Fatalf("Verify: got code=%d field=%q message=%q, want code=%d field=%q message=%q",
			e.Code, e.Field, e.Message, apperr.CodeInvalidArgument, Field, msg)
	}
}

func TestNewCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secret  []byte
		now     func() time.Time
		wantErr bool
	}{
		{name: "NilSecret", secret: nil, wantErr: true},
		{name: "ShortSecret", secret: make([]byte, 31), wantErr: true},
		{name: "MinimumSecret", secret: make([]byte, 32)},
		{name: "LongSecret", secret: make([]byte, 64)},
		{name: "NilClockUsesTimeNow", secret: secret1, now: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := NewCodes(tt.secret, tt.now)
			if tt.wantErr {
				if err == nil || c != nil {
					t.Fatalf("NewCodes(%d bytes) = %v, %v; want error", len(tt.secret), c, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewCodes(%d bytes): %v", len(tt.secret), err)
			}
			p, exp := c.Issue(branchA)
			if err := c.Verify(branchA, p); err != nil {
				t.Fatalf("Verify fresh code: %v", err)
			}
			if !exp.After(time.Now()) {
				t.Fatalf("expiresAt %v is not in the future", exp)
			}
		})
	}
}

func TestIssueVerify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		at         time.Time
		wantWindow time.Time
	}{
		{name: "WindowStart", at: t0, wantWindow: t0},
		{name: "MidWindow", at: t0.Add(17*time.Second + 300*time.Millisecond), wantWindow: t0},
		{name: "LastInstantOfWindow", at: t0.Add(Rotation - time.Nanosecond), wantWindow: t0},
		{name: "NextWindow", at: t0.Add(Rotation), wantWindow: t0.Add(Rotation)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCodes(t, secret1, tt.at)
			p, exp := c.Issue(branchA)
			if want := tt.wantWindow.Add(Validity); !exp.Equal(want) {
				t.Errorf("expiresAt = %v, want %v", exp, want)
			}
			if len(p) >= 100 {
				t.Errorf("payload is %d chars, want < 100: %q", len(p), p)
			}
			if !strings.HasPrefix(p, "nxg1.") {
				t.Errorf("payload %q lacks prefix nxg1.", p)
			}
			for _, r := range p {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
					t.Fatalf("payload %q has non URL-safe rune %q", p, r)
				}
			}
			wantErr(t, c.Verify(branchA, p), "")
		})
	}
}

func TestVerifyValidity(t *testing.T) {
	t.Parallel()
	// The code is issued mid-window; validity counts from the window start.
	issued := t0.Add(10 * time.Second)
	tests := []struct {
		name  string
		since time.Duration // from window start to the scan
		want  string
	}{
		{name: "SameInstant", since: 10 * time.Second},
		{name: "NextWindow", since: 30 * time.Second},
		{name: "AlmostSixtySeconds", since: Validity - time.Millisecond},
		{name: "AtExpiry", since: Validity, want: MsgExpired},
		{name: "LongAfter", since: time.Hour, want: MsgExpired},
		{name: "ClockBehindWithinSkew", since: -MaxSkew},
		{name: "ClockBehindBeyondSkew", since: -MaxSkew - time.Second, want: MsgExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, clk := newCodes(t, secret1, issued)
			p, exp := c.Issue(branchA)
			clk.Set(t0.Add(tt.since))
			wantErr(t, c.Verify(branchA, p), tt.want)
			if tt.want == "" && !clk.Now().Before(exp) {
				t.Errorf("accepted at %v, not before expiresAt %v", clk.Now(), exp)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	c, clk := newCodes(t, secret1, t0)
	first, _ := c.Issue(branchA)

	clk.Set(t0.Add(Rotation - time.Second))
	if same, _ := c.Issue(branchA); same != first {
		t.Fatalf("payload changed within a window: %q then %q", first, same)
	}

	clk.Set(t0.Add(Rotation))
	second, _ := c.Issue(branchA)
	if second == first {
		t.Fatalf("payload did not rotate after %v: %q", Rotation, first)
	}
	clk.Set(t0.Add(2 * Rotation))
	third, _ := c.Issue(branchA)
	if third == second || third == first {
		t.Fatalf("payload did not rotate again: %q, %q, %q", first, second, third)
	}

	steps := []struct {
		name    string
		at      time.Duration
		payload string
		want    string
	}{
		{name: "PreviousWindowStillAccepted", at: 45 * time.Second, payload: first},
		{name: "CurrentWindowAccepted", at: 45 * time.Second, payload: second},
		{name: "PreviousWindowExpired", at: 60 * time.Second, payload: first, want: MsgExpired},
		{name: "LaterWindowStillAccepted", at: 60 * time.Second, payload: second},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			c2, _ := newCodes(t, secret1, t0.Add(s.at))
			wantErr(t, c2.Verify(branchA, s.payload), s.want)
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	valid := issueAt(t, secret1, branchA, t0)
	parts := strings.Split(valid, ".")
	join := func(p ...string) string { return strings.Join(p, ".") }
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name    string
		branch  uuid.UUID
		payload string
		want    string
	}{
		{name: "Valid", branch: branchA, payload: valid},
		{name: "Empty", branch: branchA, payload: "", want: MsgMalformed},
		{name: "Truncated", branch: branchA, payload: valid[:len(valid)-1], want: MsgMalformed},
		{name: "TruncatedToThreeParts", branch: branchA, payload: join(parts[:3]...), want: MsgMalformed},
		{name: "ExtraPart", branch: branchA, payload: valid + ".x", want: MsgMalformed},
		{name: "WrongPrefix", branch: branchA, payload: join("gym1", parts[1], parts[2], parts[3]), want: MsgMalformed},
		{name: "WrongVersion", branch: branchA, payload: join("nxg2", parts[1], parts[2], parts[3]), want: MsgMalformed},
		{name: "UpperCasePrefix", branch: branchA, payload: join("NXG1", parts[1], parts[2], parts[3]), want: MsgMalformed},
		{name: "NonBase64BranchID", branch: branchA, payload: join(parts[0], "!"+parts[1][1:], parts[2], parts[3]), want: MsgMalformed},
		{name: "NonBase64MAC", branch: branchA, payload: join(parts[0], parts[1], parts[2], parts[3][:21]+"*"), want: MsgMalformed},
		{name: "StdBase64Alphabet", branch: branchA, payload: join(parts[0], parts[1], parts[2], "+/"+parts[3][2:]), want: MsgMalformed},
		{name: "PaddedMAC", branch: branchA, payload: join(parts[0], parts[1], parts[2], parts[3]+"=="), want: MsgMalformed},
		{name: "NonCanonicalBase64", branch: branchA, payload: join(parts[0], parts[1], parts[2], parts[3][:21]+nonCanonicalLast(parts[3][21])), want: MsgMalformed},
		{name: "WindowNotANumber", branch: branchA, payload: join(parts[0], parts[1], "soon", parts[3]), want: MsgMalformed},
		{name: "WindowLeadingZero", branch: branchA, payload: join(parts[0], parts[1], "0"+parts[2], parts[3]), want: MsgMalformed},
		{name: "WindowPlusSign", branch: branchA, payload: join(parts[0], parts[1], "+"+parts[2], parts[3]), want: MsgMalformed},
		{name: "WindowOverflow", branch: branchA, payload: join(parts[0], parts[1], "99999999999999999999", parts[3]), want: MsgMalformed},
		{name: "HugeInput", branch: branchA, payload: valid + strings.Repeat("A", 1<<20), want: MsgMalformed},
		{name: "JustOverLimit", branch: branchA, payload: strings.Repeat("a", MaxPayloadSize+1), want: MsgMalformed},
		{name: "ForgedMAC", branch: branchA, payload: join(parts[0], parts[1], parts[2], flip(parts[3], 0)), want: MsgInvalid},
		{name: "RedatedWindow", branch: branchA, payload: join(parts[0], parts[1], strconv.FormatInt(t0.Unix()+30, 10), parts[3]), want: MsgInvalid},
		{name: "SwappedBranchID", branch: branchB, payload: join(parts[0], b64.EncodeToString(branchB[:]), parts[2], parts[3]), want: MsgInvalid},
		{name: "OtherSecret", branch: branchA, payload: issueAt(t, secret2, branchA, t0), want: MsgInvalid},
		{name: "OtherBranch", branch: branchB, payload: valid, want: MsgOtherBranch},
		{name: "OtherBranchEvenWhenExpired", branch: branchB, payload: issueAt(t, secret1, branchA, t0.Add(-time.Hour)), want: MsgOtherBranch},
		{name: "FutureWindowBeyondSkew", branch: branchA, payload: issueAt(t, secret1, branchA, t0.Add(Rotation)), want: MsgExpired},
		{name: "Expired", branch: branchA, payload: issueAt(t, secret1, branchA, t0.Add(-Validity)), want: MsgExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCodes(t, secret1, t0.Add(10*time.Second))
			wantErr(t, c.Verify(tt.branch, tt.payload), tt.want)
		})
	}
}

// nonCanonicalLast returns another base64url character that decodes to the
// same bytes as c in the last position of a 22-character (16-byte) string:
// only the top 2 of its 6 bits are data.
func nonCanonicalLast(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

func TestOpenAt(t *testing.T) {
	t.Parallel()
	london := mustZone(t, "Europe/London")
	newYork := mustZone(t, "America/New_York")
	const (
		mon, tue, fri, sat, sun = 1, 2, 5, 6, 7
	)
	weekdays := func(opens, closes int, days ...int) []Interval {
		var out []Interval
		for _, d := range days {
			out = append(out, Interval{Weekday: d, Opens: opens, Closes: closes})
		}
		return out
	}
	normal := weekdays(6*60, 22*60, mon, tue, 3, 4, fri, sat) // closed on Sunday
	utc := func(y int, m time.Month, d, h, min, s int) time.Time {
		return time.Date(y, m, d, h, min, s, 0, time.UTC)
	}

	tests := []struct {
		name      string
		intervals []Interval
		tz        *time.Location
		at        time.Time
		want      bool
	}{
		// 2026-11-23 is a Monday; London is on GMT in November.
		{name: "NormalHoursOpen", intervals: normal, tz: london, at: utc(2026, 11, 23, 10, 0, 0), want: true},
		{name: "NormalHoursAtOpening", intervals: normal, tz: london, at: utc(2026, 11, 23, 6, 0, 0), want: true},
		{name: "NormalHoursBeforeOpening", intervals: normal, tz: london, at: utc(2026, 11, 23, 5, 59, 59)},
		{name: "NormalHoursLastSecond", intervals: normal, tz: london, at: utc(2026, 11, 23, 21, 59, 59), want: true},
		{name: "NormalHoursAtClosing", intervals: normal, tz: london, at: utc(2026, 11, 23, 22, 0, 0)},
		{name: "ClosedDay", intervals: normal, tz: london, at: utc(2026, 11, 29, 12, 0, 0)},
		{name: "NoIntervals", intervals: nil, tz: london, at: utc(2026, 11, 23, 12, 0, 0)},
		{name: "SplitHoursGap", intervals: []Interval{{mon, 360, 720}, {mon, 960, 1320}}, tz: london, at: utc(2026, 11, 23, 14, 0, 0)},
		{name: "SplitHoursSecondInterval", intervals: []Interval{{mon, 360, 720}, {mon, 960, 1320}}, tz: london, at: utc(2026, 11, 23, 17, 0, 0), want: true},
		// Friday 2026-11-27 until 24:00.
		{name: "MidnightCloseLastSecond", intervals: weekdays(18*60, 1440, fri), tz: london, at: utc(2026, 11, 27, 23, 59, 59), want: true},
		{name: "MidnightCloseNextDay", intervals: weekdays(18*60, 1440, fri), tz: london, at: utc(2026, 11, 28, 0, 0, 0)},
		{name: "AllDay", intervals: weekdays(0, 1440, sat), tz: london, at: utc(2026, 11, 28, 0, 0, 0), want: true},
		// 23:30 Monday in New York (EST) is 04:30 Tuesday UTC.
		{name: "NewYorkLateMondayOpen", intervals: weekdays(22*60, 1440, mon), tz: newYork, at: utc(2026, 11, 24, 4, 30, 0), want: true},
		{name: "NewYorkNotTuesdayYet", intervals: weekdays(0, 1440, tue), tz: newYork, at: utc(2026, 11, 24, 4, 30, 0)},
		{name: "NewYorkNotUTCClock", intervals: weekdays(4*60, 5*60, mon, tue), tz: newYork, at: utc(2026, 11, 24, 4, 30, 0)},
		// Europe/London springs forward on Sunday 2026-03-29: 01:00 GMT becomes 02:00 BST.
		{name: "SpringForwardBeforeJump", intervals: weekdays(0, 120, sun), tz: london, at: utc(2026, 3, 29, 0, 59, 59), want: true},
		{name: "SpringForwardAfterJump", intervals: weekdays(0, 120, sun), tz: london, at: utc(2026, 3, 29, 1, 0, 0)},
		{name: "SpringForwardOpensOnBST", intervals: weekdays(6*60, 22*60, sun), tz: london, at: utc(2026, 3, 29, 5, 30, 0), want: true},
		{name: "SpringForwardClosesOnBST", intervals: weekdays(6*60, 22*60, sun), tz: london, at: utc(2026, 3, 29, 21, 0, 0)},
		// Europe/London falls back on Sunday 2026-10-25: 01:00-02:00 happens twice.
		{name: "FallBackFirstPass", intervals: weekdays(60, 120, sun), tz: london, at: utc(2026, 10, 25, 0, 30, 0), want: true},
		{name: "FallBackSecondPass", intervals: weekdays(60, 120, sun), tz: london, at: utc(2026, 10, 25, 1, 30, 0), want: true},
		{name: "FallBackAfter", intervals: weekdays(60, 120, sun), tz: london, at: utc(2026, 10, 25, 2, 0, 0)},
		{name: "NilZoneIsUTC", intervals: weekdays(0, 60, mon), tz: nil, at: utc(2026, 11, 23, 0, 30, 0), want: true},
		{name: "InstantInOtherZone", intervals: normal, tz: london, at: time.Date(2026, 11, 23, 5, 0, 0, 0, newYork), want: true},
		{name: "MalformedIntervalsIgnored", intervals: []Interval{{mon, 1320, 360}, {0, 0, 1440}, {8, 0, 1440}, {mon, -10, 2000}}, tz: london, at: utc(2026, 11, 23, 23, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := OpenAt(tt.intervals, tt.tz, tt.at); got != tt.want {
				t.Fatalf("OpenAt(%v, %v, %v) = %v, want %v", tt.intervals, tt.tz, tt.at, got, tt.want)
			}
		})
	}
}

func TestCheckOpen(t *testing.T) {
	t.Parallel()
	hours := []Interval{{Weekday: 1, Opens: 360, Closes: 1320}}
	tests := []struct {
		name     string
		at       time.Time
		wantOpen bool
	}{
		{name: "Open", at: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), wantOpen: true},
		{name: "Closed", at: time.Date(2026, 11, 23, 23, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckOpen(hours, time.UTC, tt.at)
			if tt.wantOpen {
				if err != nil {
					t.Fatalf("CheckOpen: %v", err)
				}
				return
			}
			e, ok := apperr.As(err)
			if !ok || e.Code != apperr.CodeFailedPrecondition || e.Message != MsgBranchClosed {
				t.Fatalf("CheckOpen = %v, want FailedPrecondition %q", err, MsgBranchClosed)
			}
		})
	}
}

// FuzzVerify checks that no input panics, every refusal is one of the four
// documented errors, and only payloads Issue produced for the branch within
// validity are accepted.
func FuzzVerify(f *testing.F) {
	now := t0.Add(27 * time.Second) // within MaxSkew of the next window
	legit := map[string]bool{}
	for d := -2 * Rotation; d <= Rotation; d += Rotation {
		legit[issueAt(f, secret1, branchA, t0.Add(d))] = true
	}
	valid := issueAt(f, secret1, branchA, t0)
	f.Add(valid)
	f.Add(issueAt(f, secret1, branchB, t0))
	f.Add(issueAt(f, secret2, branchA, t0))
	f.Add(issueAt(f, secret1, branchA, t0.Add(-time.Hour)))
	f.Add(valid[:len(valid)-3])
	f.Add(valid + "=")
	f.Add("nxg1...")
	f.Add("nxg1.AAAAAAAAAAAAAAAAAAAAAA.0.AAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Add("\x00\xff.nxg1")
	f.Add(strings.Repeat(".", 300))

	c, err := NewCodes(secret1, func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	messages := map[string]bool{MsgMalformed: true, MsgInvalid: true, MsgExpired: true, MsgOtherBranch: true}
	f.Fuzz(func(t *testing.T, payload string) {
		err := c.Verify(branchA, payload)
		if err == nil {
			if !legit[payload] {
				t.Fatalf("accepted a payload Issue did not produce: %q", payload)
			}
			return
		}
		e, ok := apperr.As(err)
		if !ok || e.Code != apperr.CodeInvalidArgument || e.Field != Field || !messages[e.Message] {
			t.Fatalf("Verify(%q) = %v, want one of the documented errors", payload, err)
		}
		if legit[payload] && e.Message != MsgExpired {
			t.Fatalf("Verify(%q) refused an issued payload: %v", payload, err)
		}
	})
}
