package floor

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// LandMachineSets copies sets that linked machines just reported into their
// members' open workouts as sets with source machine, opening a workout for
// a member who has none, in tx (the report batch's transaction, so a set
// and its workout copy commit together). Each set lands on the first
// exercise (by id) of the catalogue its machine's type performs, with the
// client_set_id "machine/<machine set id>", which the app's client_set_id
// pattern cannot produce. A set already landed is skipped, so a retried
// batch lands nothing twice. It sends one WorkoutEvent per landed set.
func LandMachineSets(ctx context.Context, tx pgx.Tx, machineSetIDs []uuid.UUID) error {
	if len(machineSetIDs) == 0 {
		return nil
	}
	if err := queries.WorkoutOpenForMachineSets(ctx, tx, machineSetIDs); err != nil {
		return fmt.Errorf("open workouts for machine sets: %w", err)
	}
	landed, err := queries.WorkoutLandMachineSets(ctx, tx, machineSetIDs)
	if err != nil {
		return fmt.Errorf("land machine sets in workouts: %w", err)
	}
	if len(landed) == 0 {
		return nil
	}
	payloads := make([]string, len(landed))
	for i, s := range landed {
		b, err := json.Marshal(WorkoutEvent{User: s.UserID, Workout: s.WorkoutID, Kind: WorkoutSetLogged, ID: s.ID})
		if err != nil {
			return fmt.Errorf("floor: encode workout event: %w", err)
		}
		payloads[i] = string(b)
	}
	// One statement for the whole batch, like notifyMembers.
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", ChannelWorkouts, payloads); err != nil {
		return fmt.Errorf("floor: notify workouts: %w", err)
	}
	return nil
}
