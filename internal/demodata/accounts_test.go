package demodata_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/demodata"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// seededAccount is what the tests read back of one demo account.
type seededAccount struct {
	id               uuid.UUID
	role, hash       string
	dataKey          []byte
	profile, privacy bool
	branches         []string
}

func readAccount(t *testing.T, db *testkit.Database, email string) seededAccount {
	t.Helper()
	ctx := context.Background()
	var a seededAccount
	err := db.Pool.QueryRow(ctx, `
		SELECT u.id, u.role, u.password_hash, u.data_key,
		       EXISTS (SELECT 1 FROM profiles p WHERE p.user_id = u.id),
		       EXISTS (SELECT 1 FROM privacy_settings s WHERE s.user_id = u.id),
		       ARRAY(SELECT b.name FROM staff_branches sb JOIN branches b ON b.id = sb.branch_id WHERE sb.user_id = u.id ORDER BY b.name)
		FROM users u WHERE u.email = $1`, email,
	).Scan(&a.id, &a.role, &a.hash, &a.dataKey, &a.profile, &a.privacy, &a.branches)
	if err != nil {
		t.Fatalf("read %s: %v", email, err)
	}
	return a
}

func TestSeedAccounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testkit.NewDatabase(t)
	hasher := password.NewHasher(password.Options{})
	spec, err := fieldcrypt.GenerateMasterKeySpec("test1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := fieldcrypt.ParseMasterKeys(spec)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("NeedsTheBranches", func(t *testing.T) {
		// On an empty database the staff account has no branch to work at.
		other := testkit.NewDatabase(t)
		if err := demodata.SeedAccounts(ctx, other.Pool, hasher, keys); err == nil {
			t.Fatal("SeedAccounts without Seed succeeded")
		}
	})

	if err := demodata.Seed(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := demodata.SeedAccounts(ctx, db.Pool, hasher, keys); err != nil {
		t.Fatalf("first SeedAccounts: %v", err)
	}
	first := map[string]seededAccount{}
	for _, a := range demodata.Accounts {
		first[a.Email] = readAccount(t, db, a.Email)
	}
	if err := demodata.SeedAccounts(ctx, db.Pool, hasher, keys); err != nil {
		t.Fatalf("second SeedAccounts: %v", err)
	}

	roles := map[string]bool{}
	for _, a := range demodata.Accounts {
		t.Run(a.Role, func(t *testing.T) {
			roles[a.Role] = true
			got := readAccount(t, db, a.Email)
			was := first[a.Email]
			if got.id != was.id || got.hash != was.hash || string(got.dataKey) != string(was.dataKey) {
				t.Fatalf("second seed changed the account: id %s -> %s, hash changed %v, key changed %v",
					was.id, got.id, got.hash != was.hash, string(got.dataKey) != string(was.dataKey))
			}
			if got.role != a.Role {
				t.Errorf("role = %q, want %q", got.role, a.Role)
			}
			if ok, err := hasher.Verify(ctx, a.Password, got.hash); err != nil || !ok {
				t.Errorf("password %q does not verify: %v, %v", a.Password, ok, err)
			}
			if err := password.Check("password", a.Password, a.Email); err != nil {
				t.Errorf("demo password breaks the password policy: %v", err)
			}
			if _, err := keys.Unwrap(got.id.String(), got.dataKey); err != nil {
				t.Errorf("data key does not unwrap for the account's id: %v", err)
			}
			if !got.profile || !got.privacy {
				t.Errorf("profile row %v, privacy row %v; want both", got.profile, got.privacy)
			}
			wantBranches := 0
			if a.Role == "staff" {
				wantBranches = 1
				if len(got.branches) != 1 || got.branches[0] != demodata.Branches[0].Name {
					t.Errorf("staff branches = %v, want [%s]", got.branches, demodata.Branches[0].Name)
				}
			}
			if len(got.branches) != wantBranches {
				t.Errorf("staff branches = %v, want %d", got.branches, wantBranches)
			}
		})
	}
	t.Run("MemberHoldsTheFirstBranchOnly", func(t *testing.T) {
		member := readAccount(t, db, "member@nxg.dev")
		// Seeded twice above, so also proves the second seed added none.
		if got := memberships(t, db, member.id); len(got) != 1 || got[0] != demodata.Branches[0].Name+" open-ended active" {
			t.Fatalf("member's memberships = %q, want one open-ended active membership of %s", got, demodata.Branches[0].Name)
		}
		usable := map[string]bool{}
		for _, b := range demodata.Branches {
			var active bool
			if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM memberships m JOIN branches b ON b.name = $2
				WHERE m.user_id = $1 AND m.ended_at IS NULL AND m.valid_from <= now()
				  AND (m.branch_id IS NULL OR m.branch_id = b.id))`, member.id, b.Name).Scan(&active); err != nil {
				t.Fatal(err)
			}
			usable[b.Name] = active
		}
		if !usable[demodata.Branches[0].Name] || usable[demodata.Branches[1].Name] {
			t.Fatalf("branches the member may use = %v, want the first only", usable)
		}
		for _, email := range []string{"staff@nxg.dev", "admin@nxg.dev"} {
			if got := memberships(t, db, readAccount(t, db, email).id); len(got) != 0 {
				t.Errorf("%s memberships = %q, want none", email, got)
			}
		}
	})

	t.Run("KeepsAnEndedMembershipEnded", func(t *testing.T) {
		member := readAccount(t, db, "member@nxg.dev")
		if _, err := db.Pool.Exec(ctx, `UPDATE memberships SET ended_at = now() WHERE user_id = $1`, member.id); err != nil {
			t.Fatal(err)
		}
		if err := demodata.SeedAccounts(ctx, db.Pool, hasher, keys); err != nil {
			t.Fatal(err)
		}
		if got := memberships(t, db, member.id); len(got) != 1 || got[0] != demodata.Branches[0].Name+" open-ended ended" {
			t.Fatalf("member's memberships after re-seeding = %q, want the ended one only", got)
		}
	})

	if len(roles) != 3 || !roles["member"] || !roles["staff"] || !roles["admin"] {
		t.Errorf("demo roles = %v, want one member, staff and admin", roles)
	}

	t.Run("KeepsAChangedAccount", func(t *testing.T) {
		// A developer changed the admin's password and demoted the member:
		// seeding again must not undo either.
		if _, err := db.Pool.Exec(ctx, `UPDATE users SET password_hash = 'changed' WHERE email = 'admin@nxg.dev'`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, `UPDATE users SET role = 'staff' WHERE email = 'member@nxg.dev'`); err != nil {
			t.Fatal(err)
		}
		if err := demodata.SeedAccounts(ctx, db.Pool, hasher, keys); err != nil {
			t.Fatal(err)
		}
		if got := readAccount(t, db, "admin@nxg.dev"); got.hash != "changed" {
			t.Errorf("admin password hash was overwritten")
		}
		if got := readAccount(t, db, "member@nxg.dev"); got.role != "staff" {
			t.Errorf("member role was reset to %q", got.role)
		}
	})
}

// memberships describes a user's memberships as "branch open-ended|limited
// active|ended", oldest first.
func memberships(t *testing.T, db *testkit.Database, userID uuid.UUID) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		SELECT coalesce(b.name, 'network') || ' ' ||
		       CASE WHEN m.valid_until IS NULL THEN 'open-ended' ELSE 'limited' END || ' ' ||
		       CASE WHEN m.ended_at IS NULL AND m.valid_from <= now() THEN 'active' ELSE 'ended' END
		FROM memberships m LEFT JOIN branches b ON b.id = m.branch_id
		WHERE m.user_id = $1 ORDER BY m.created_at, m.id`, userID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
