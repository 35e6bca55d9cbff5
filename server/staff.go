package server

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
)

// requireStaffOf checks that the caller may act for a branch: admins act
// everywhere, staff only at the branches they work at (staff_branches).
// doing names the action in the refusal, e.g. "revoke devices". Callers
// check the role first; this only checks the branch.
func requireStaffOf(ctx context.Context, tx dbsqlc.DBTX, p auth.Principal, branchID uuid.UUID, doing string) error {
	if p.IsAdmin() {
		return nil
	}
	has, err := dbsqlc.New().StaffBranchHas(ctx, tx, dbsqlc.StaffBranchHasParams{UserID: p.UserID, BranchID: branchID})
	if err != nil {
		return fmt.Errorf("read staff branches: %w", err)
	}
	if !has {
		return apperr.PermissionDenied("staff may only %s at the branches they work at", doing)
	}
	return nil
}
