package demodata

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// Account is a demo sign-in: known to everyone, so it exists only in
// development databases (cmd/nxg-dev seeds it; cmd/nxg never does).
type Account struct {
	Email, Password, DisplayName string
	// Role is member, staff or admin.
	Role string
}

// Accounts are the demo sign-ins, one per role. The staff account works at
// the first demo branch (Branches[0]), and the member holds an open-ended
// membership of that branch only, so checking in elsewhere shows the
// refusal.
var Accounts = []Account{
	{Email: "member@nxg.dev", Password: "nxg-member-pass-1", DisplayName: "Demo Member", Role: "member"},
	{Email: "staff@nxg.dev", Password: "nxg-staff-pass-1", DisplayName: "Demo Staff", Role: "staff"},
	{Email: "admin@nxg.dev", Password: "nxg-admin-pass-1", DisplayName: "Demo Admin", Role: "admin"},
}

// SeedAccounts creates the demo accounts that do not exist yet, each with
// its data key wrapped under keys, an empty profile and privacy settings,
// the staff account's branch and the member's membership. Run Seed first:
// the branch must exist.
//
// It is idempotent and conservative: an existing account (matched by
// email) keeps its id, password, role and name, so a developer who changed
// the demo password keeps it, and passwords are hashed only for accounts
// actually created. Missing profile, privacy and branch rows are added; the
// member's membership is added only when they have never had one of the
// branch, so a membership a developer ended stays ended.
func SeedAccounts(ctx context.Context, pool *pgxpool.Pool, hasher *password.Hasher, keys *fieldcrypt.MasterKeys) error {
	q := dbsqlc.New()
	for _, a := range Accounts {
		if err := seedAccount(ctx, pool, q, hasher, keys, a); err != nil {
			return fmt.Errorf("demo account %s: %w", a.Email, err)
		}
	}
	return nil
}

func seedAccount(ctx context.Context, pool *pgxpool.Pool, q *dbsqlc.Queries, hasher *password.Hasher, keys *fieldcrypt.MasterKeys, a Account) error {
	// The slow part, hashing, happens outside the transaction and only for
	// an account that is missing.
	var fresh *dbsqlc.AdminUserCreateParams
	_, err := q.AdminUserGetByEmailForUpdate(ctx, pool, a.Email)
	switch {
	case db.IsNotFound(err):
		hash, err := hasher.Hash(ctx, a.Password)
		if err != nil {
			return fmt.Errorf("hash password: %w", err)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		_, wrapped, err := keys.NewDataKey(id.String())
		if err != nil {
			return fmt.Errorf("data key: %w", err)
		}
		fresh = &dbsqlc.AdminUserCreateParams{
			ID: id, Email: a.Email, PasswordHash: hash, DisplayName: a.DisplayName, Role: a.Role, DataKey: wrapped,
		}
	case err != nil:
		return err
	}

	return db.WithTx(ctx, pool, func(tx pgx.Tx) error {
		var user dbsqlc.User
		var err error
		if fresh != nil {
			user, err = q.AdminUserCreate(ctx, tx, *fresh)
		}
		if fresh == nil || db.IsNotFound(err) {
			// It existed, or another dev server on the same database
			// created it first: keep that one.
			user, err = q.AdminUserGetByEmailForUpdate(ctx, tx, a.Email)
		}
		if err != nil {
			return err
		}
		if err := q.AdminProfileEnsure(ctx, tx, user.ID); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
		if err := q.AdminPrivacyEnsure(ctx, tx, user.ID); err != nil {
			return fmt.Errorf("privacy settings: %w", err)
		}
		if a.Role == "member" {
			return seedMembership(ctx, tx, q, user.ID)
		}
		if a.Role != "staff" {
			return nil
		}
		branch, err := q.AdminBranchIDByName(ctx, tx, Branches[0].Name)
		if err != nil {
			return fmt.Errorf("branch %s (run Seed first): %w", Branches[0].Name, err)
		}
		return q.StaffBranchAdd(ctx, tx, dbsqlc.StaffBranchAddParams{UserID: user.ID, BranchID: branch})
	})
}

// seedMembership gives the member an open-ended membership of the first demo
// branch, unless they have (or had) one of it.
func seedMembership(ctx context.Context, tx pgx.Tx, q *dbsqlc.Queries, userID uuid.UUID) error {
	branch, err := q.AdminBranchIDByName(ctx, tx, Branches[0].Name)
	if err != nil {
		return fmt.Errorf("branch %s (run Seed first): %w", Branches[0].Name, err)
	}
	memberships, err := q.MembershipsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read memberships: %w", err)
	}
	for _, m := range memberships {
		if m.BranchID.Valid && m.BranchID.UUID == branch {
			return nil
		}
	}
	if _, err := q.MembershipCreate(ctx, tx, dbsqlc.MembershipCreateParams{
		UserID: userID, BranchID: uuid.NullUUID{UUID: branch, Valid: true}, ValidFrom: time.Now(),
	}); err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	return nil
}
