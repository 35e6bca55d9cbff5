package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

const strongPassword = "Correct-Horse-Battery-42"

// adminTestBundle is a migrated database and a full configuration for
// driving `nxg admin` and `nxg audit` through run.
type adminTestBundle struct {
	db      *testkit.Database
	environ map[string]string
	keys    *fieldcrypt.MasterKeys
	audit   *audit.Log
}

func setupAdmin(t *testing.T) *adminTestBundle {
	t.Helper()
	d := testkit.NewDatabase(t)
	environ := map[string]string{
		"DATABASE_URL":        d.URL,
		"REDIS_URL":           "redis://127.0.0.1:6379/0",
		"MONGO_URL":           "mongodb://127.0.0.1:27017",
		"NXG_OPS_USER":        "ops",
		"NXG_OPS_PASSWORD":    opsPassword,
		"S3_BUCKET":           "nxg-test",
		"FIREBASE_PROJECT_ID": "nxg-test",
		"NXG_FCM_ENDPOINT":    "http://127.0.0.1:1",
	}
	maps.Copy(environ, testkit.AuthEnv(t))
	maps.Copy(environ, testkit.AIEnv())
	keys, err := fieldcrypt.ParseMasterKeys(environ["NXG_MASTER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	auditKey, err := base64.StdEncoding.DecodeString(environ["NXG_AUDIT_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.New(auditKey)
	if err != nil {
		t.Fatal(err)
	}
	return &adminTestBundle{db: d, environ: environ, keys: keys, audit: log}
}

// run drives the command line with stdin.
func (b *adminTestBundle) run(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, args, b.environ, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustRun runs and fails the test on an error.
func (b *adminTestBundle) mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	stdout, stderr, err := b.run(t, stdin, args...)
	if err != nil {
		t.Fatalf("nxg %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// account is what the tests read back of one users row.
type account struct {
	id                      uuid.UUID
	role, hash, displayName string
	dataKey                 []byte
	hasProfile, hasPrivacy  bool
	branches                []uuid.UUID
}

func (b *adminTestBundle) account(t *testing.T, email string) (account, bool) {
	t.Helper()
	var a account
	err := b.db.Pool.QueryRow(context.Background(), `
		SELECT u.id, u.role, u.password_hash, u.display_name, u.data_key,
		       EXISTS (SELECT 1 FROM profiles p WHERE p.user_id = u.id),
		       EXISTS (SELECT 1 FROM privacy_settings s WHERE s.user_id = u.id),
		       ARRAY(SELECT branch_id FROM staff_branches sb WHERE sb.user_id = u.id ORDER BY branch_id)
		FROM users u WHERE u.email = $1`, email,
	).Scan(&a.id, &a.role, &a.hash, &a.displayName, &a.dataKey, &a.hasProfile, &a.hasPrivacy, &a.branches)
	if err != nil {
		if strings.Contains(err.Error(), "no rows") {
			return account{}, false
		}
		t.Fatal(err)
	}
	return a, true
}

func (b *adminTestBundle) countUsers(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// auditRow is one row of the trail as the tests check it.
type auditRow struct {
	actorNull bool
	action    string
	targetID  string
	details   map[string]string
}

func (b *adminTestBundle) auditRows(t *testing.T) []auditRow {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(),
		`SELECT actor_id IS NULL, action, coalesce(target_id, ''), details FROM audit_events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		var details string
		if err := rows.Scan(&r.actorNull, &r.action, &r.targetID, &details); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(details), &r.details); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (b *adminTestBundle) insertBranch(t *testing.T, name string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, 'Somewhere 1', 'Europe/London', 100) RETURNING id`, name,
	).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAdminCreateUser(t *testing.T) {
	t.Parallel()

	t.Run("CreatesAnAdmin", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		out := b.mustRun(t, strongPassword+"\n",
			"admin", "create-user", "--role", "admin", "--email", " Ops@Example.COM ", "--display-name", "Ops Lead")
		a, ok := b.account(t, "ops@example.com")
		if !ok {
			t.Fatal("no account for the (lower-cased) email")
		}
		if !strings.Contains(out, "created admin account "+a.id.String()) {
			t.Errorf("stdout = %q", out)
		}
		if strings.Contains(out, strongPassword) {
			t.Errorf("stdout shows the password")
		}
		if a.role != "admin" || a.displayName != "Ops Lead" || !a.hasProfile || !a.hasPrivacy || len(a.branches) != 0 {
			t.Errorf("account = %+v", a)
		}
		if !strings.HasPrefix(a.hash, "$argon2id$") {
			t.Errorf("password hash %q is not argon2id", a.hash)
		}
		if ok, err := password.NewHasher(password.Options{}).Verify(context.Background(), strongPassword, a.hash); err != nil || !ok {
			t.Errorf("password does not verify: %v %v", ok, err)
		}
		if _, err := b.keys.Unwrap(a.id.String(), a.dataKey); err != nil {
			t.Errorf("data key does not unwrap under the configured master key: %v", err)
		}
		rows := b.auditRows(t)
		if len(rows) != 1 || rows[0].action != "admin.user_created" || !rows[0].actorNull ||
			rows[0].targetID != a.id.String() || len(rows[0].details) != 1 || rows[0].details["role"] != "admin" {
			t.Fatalf("audit rows = %+v", rows)
		}
	})

	t.Run("PasswordOnlyFirstLine", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		b.mustRun(t, strongPassword+"\r\nsecond line\n",
			"admin", "create-user", "--role", "member", "--email", "m@example.com", "--display-name", "M")
		a, _ := b.account(t, "m@example.com")
		if ok, _ := password.NewHasher(password.Options{}).Verify(context.Background(), strongPassword, a.hash); !ok {
			t.Fatal("the password is not the first line without its line ending")
		}
	})

	t.Run("RefusedRequests", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		base := []string{"admin", "create-user", "--email", "x@example.com", "--display-name", "X"}
		cases := []struct {
			name, stdin string
			args        []string
			usage       bool
			want        string
		}{
			{"WeakPassword", "password\n", append(base, "--role", "admin"), false, "too common"},
			{"ShortPassword", "Ab1-x\n", append(base, "--role", "admin"), false, "at least 8"},
			{"PasswordIsEmail", "x@example.com\n", append(base, "--role", "admin"), false, "email"},
			{"NoPassword", "", append(base, "--role", "admin"), false, "no password on stdin"},
			{"PasswordAsArgument", strongPassword, append(base, "--role", "admin", strongPassword), true, "never from arguments"},
			{"UnknownRole", strongPassword, append(base, "--role", "owner"), true, "--role must be"},
			{"NoRole", strongPassword, base, true, "--role must be"},
			{"BadEmail", strongPassword, []string{"admin", "create-user", "--role", "admin", "--email", "Ops <ops@example.com>", "--display-name", "X"}, true, "--email"},
			{"NoDisplayName", strongPassword, []string{"admin", "create-user", "--role", "admin", "--email", "x@example.com"}, false, "--display-name is required"},
			{"StaffWithoutBranch", strongPassword, append(base, "--role", "staff"), true, "at least one --branch"},
			{"StaffUnknownBranch", strongPassword, append(base, "--role", "staff", "--branch", uuid.NewString()), false, "no such branch"},
			{"BranchNotAUUID", strongPassword, append(base, "--role", "staff", "--branch", "shoreditch"), true, "branch id"},
			{"BranchForAMember", strongPassword, append(base, "--role", "member", "--branch", uuid.NewString()), true, "only for staff"},
			{"NoSubcommand", "", []string{"admin"}, true, "usage: nxg admin create-user"},
			{"UnknownSubcommand", "", []string{"admin", "delete-user"}, true, "usage: nxg admin create-user"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				stdout, stderr, err := b.run(t, c.stdin, c.args...)
				if err == nil {
					t.Fatalf("succeeded: %s", stdout)
				}
				if c.usage != errors.Is(err, errUsage) {
					t.Fatalf("error %v: usage error = %v, want %v", err, errors.Is(err, errUsage), c.usage)
				}
				if msg := err.Error() + stderr; !strings.Contains(msg, c.want) {
					t.Fatalf("error %q / stderr %q does not say %q", err, stderr, c.want)
				}
				if strings.Contains(stderr+stdout+err.Error(), strongPassword) {
					t.Fatal("output shows the password")
				}
			})
		}
		if n := b.countUsers(t); n != 0 {
			t.Fatalf("%d accounts created by refused requests", n)
		}
		if rows := b.auditRows(t); len(rows) != 0 {
			t.Fatalf("audit rows for refused requests: %+v", rows)
		}
	})

	t.Run("StaffWithBranches", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		one, two := b.insertBranch(t, "NXG One"), b.insertBranch(t, "NXG Two")
		b.mustRun(t, strongPassword, "admin", "create-user", "--role", "staff", "--email", "s@example.com",
			"--display-name", "S", "--branch", one.String(), "--branch", two.String(), "--branch", one.String())
		a, _ := b.account(t, "s@example.com")
		if a.role != "staff" || len(a.branches) != 2 || !containsAll(a.branches, one, two) {
			t.Fatalf("account = %+v, want staff at %s and %s", a, one, two)
		}
		rows := b.auditRows(t)
		if len(rows) != 1 || rows[0].details["role"] != "staff" {
			t.Fatalf("audit rows = %+v", rows)
		}
	})

	t.Run("DuplicateRefused", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		args := []string{"admin", "create-user", "--role", "member", "--email", "d@example.com", "--display-name", "D"}
		b.mustRun(t, strongPassword, args...)
		before, _ := b.account(t, "d@example.com")
		_, _, err := b.run(t, "Another-Passphrase-77", append(args[:3:3], "admin", "--email", "D@example.com", "--display-name", "D")...)
		if err == nil || !strings.Contains(err.Error(), "exists already") || !strings.Contains(err.Error(), "--update-role") {
			t.Fatalf("duplicate = %v, want refused naming --update-role", err)
		}
		after, _ := b.account(t, "d@example.com")
		if after.role != "member" || after.hash != before.hash || b.countUsers(t) != 1 || len(b.auditRows(t)) != 1 {
			t.Fatalf("duplicate changed something: %+v", after)
		}
	})

	t.Run("UpdateRole", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		branch := b.insertBranch(t, "NXG Three")
		b.mustRun(t, strongPassword, "admin", "create-user", "--role", "member", "--email", "u@example.com", "--display-name", "U")
		created, _ := b.account(t, "u@example.com")

		// No password is read for an existing account: stdin may be empty.
		out := b.mustRun(t, "", "admin", "create-user", "--update-role", "--role", "staff", "--email", "u@example.com", "--branch", branch.String())
		if !strings.Contains(out, "member -> staff") {
			t.Errorf("stdout = %q", out)
		}
		staff, _ := b.account(t, "u@example.com")
		if staff.id != created.id || staff.role != "staff" || staff.hash != created.hash || staff.displayName != "U" ||
			len(staff.branches) != 1 || staff.branches[0] != branch {
			t.Fatalf("after promotion to staff: %+v", staff)
		}

		b.mustRun(t, "", "admin", "create-user", "--update-role", "--role", "admin", "--email", "u@example.com")
		admin, _ := b.account(t, "u@example.com")
		if admin.id != created.id || admin.role != "admin" || len(admin.branches) != 0 {
			t.Fatalf("after promotion to admin: %+v (staff branches must go with the staff role)", admin)
		}

		rows := b.auditRows(t)
		if len(rows) != 3 || rows[1].action != "admin.user_role_updated" || rows[1].details["role"] != "staff" ||
			rows[1].details["previous_role"] != "member" || rows[1].details["branches"] != branch.String() ||
			rows[2].details["role"] != "admin" || rows[2].details["previous_role"] != "staff" || !rows[2].actorNull {
			t.Fatalf("audit rows = %+v", rows)
		}

		// --update-role on an email nobody has creates the account.
		b.mustRun(t, strongPassword, "admin", "create-user", "--update-role", "--role", "admin", "--email", "new@example.com", "--display-name", "New")
		if a, ok := b.account(t, "new@example.com"); !ok || a.role != "admin" {
			t.Fatalf("--update-role did not create a missing account: %+v", a)
		}
		if _, _, err := b.run(t, "", "admin", "create-user", "--update-role", "--role", "staff", "--email", "u@example.com", "--branch", uuid.NewString()); err == nil ||
			!strings.Contains(err.Error(), "no such branch") {
			t.Fatalf("update to an unknown branch = %v", err)
		}
	})
}

func containsAll(ids []uuid.UUID, want ...uuid.UUID) bool {
	for _, w := range want {
		found := false
		for _, id := range ids {
			found = found || id == w
		}
		if !found {
			return false
		}
	}
	return true
}

var headLine = regexp.MustCompile(`head hash:\s+([0-9a-f]{64})`)

func TestAuditVerify(t *testing.T) {
	t.Parallel()

	t.Run("EmptyTrail", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		out := b.mustRun(t, "", "audit", "verify")
		if !strings.Contains(out, "rows checked: 0") || !strings.Contains(out, "(empty trail)") || !strings.Contains(out, "OK") {
			t.Fatalf("stdout = %q", out)
		}
	})

	t.Run("GoodTrail", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		for _, e := range []string{"a@example.com", "b@example.com", "c@example.com"} {
			b.mustRun(t, strongPassword, "admin", "create-user", "--role", "member", "--email", e, "--display-name", "N")
		}
		out := b.mustRun(t, "", "audit", "verify")
		m := headLine.FindStringSubmatch(out)
		if !strings.Contains(out, "rows checked: 3") || m == nil || !strings.Contains(out, "audit trail OK") {
			t.Fatalf("stdout = %q", out)
		}
		var head []byte
		if err := b.db.Pool.QueryRow(context.Background(), `SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&head); err != nil {
			t.Fatal(err)
		}
		if m[1] != hex.EncodeToString(head) {
			t.Fatalf("head hash %s, want the last row's %x", m[1], head)
		}
	})

	t.Run("TamperedTrail", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		for _, e := range []string{"a@example.com", "b@example.com"} {
			b.mustRun(t, strongPassword, "admin", "create-user", "--role", "member", "--email", e, "--display-name", "N")
		}
		ctx := context.Background()
		// Someone with full database access switches the guard off and
		// promotes an account in the trail after the fact.
		if _, err := b.db.Pool.Exec(ctx, `ALTER TABLE audit_events DISABLE TRIGGER USER`); err != nil {
			t.Fatal(err)
		}
		var seq int64
		if err := b.db.Pool.QueryRow(ctx, `UPDATE audit_events SET details = '{"role":"admin"}' WHERE seq = (SELECT min(seq) FROM audit_events) RETURNING seq`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		stdout, _, err := b.run(t, "", "audit", "verify")
		if err == nil || !strings.Contains(err.Error(), "audit trail is broken") {
			t.Fatalf("verify of a tampered trail = %v, want an error\n%s", err, stdout)
		}
		if errors.Is(err, errUsage) {
			t.Fatal("a broken trail is not a usage error")
		}
		if !strings.Contains(stdout, "rows checked: 2") || !strings.Contains(stdout, "was edited") ||
			!strings.Contains(stdout, "seq "+strconv.FormatInt(seq, 10)+":") || strings.Contains(stdout, "audit trail OK") {
			t.Fatalf("stdout = %q", stdout)
		}
	})

	t.Run("WrongAuditKey", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		b.mustRun(t, strongPassword, "admin", "create-user", "--role", "member", "--email", "a@example.com", "--display-name", "N")
		b.environ["NXG_AUDIT_KEY"] = testkit.AuthEnv(t)["NXG_AUDIT_KEY"]
		if _, _, err := b.run(t, "", "audit", "verify"); err == nil {
			t.Fatal("a trail verified under another key")
		}
	})

	t.Run("Usage", func(t *testing.T) {
		t.Parallel()
		b := setupAdmin(t)
		for _, args := range [][]string{{"audit"}, {"audit", "check"}, {"audit", "verify", "now"}} {
			_, stderr, err := b.run(t, "", args...)
			if !errors.Is(err, errUsage) || !strings.HasPrefix(stderr, "usage: nxg audit verify") {
				t.Fatalf("nxg %v = %v, stderr %q", args, err, stderr)
			}
		}
	})
}
