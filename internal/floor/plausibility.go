package floor

import (
	"strings"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// SetValues is what a console reports of one completed set.
type SetValues struct {
	// ClientSetID is the console's own id of the set, its idempotency key.
	ClientSetID     string
	Reps            int32
	WeightKg        float64
	DurationSeconds int32
	DistanceM       float64
	Calories        int32
}

// machineLimits is what a set on one type of machine can physically be.
// The proto's ranges bound each value on its own; these bound how the
// values go together on a given machine.
type machineLimits struct {
	// cardio machines measure distance and take no weight; strength
	// machines (every other type) take weight and cover no distance.
	cardio bool
	// maxSpeed is the fastest humanly possible average speed over a whole
	// set on a cardio machine, in metres per second: a sprinter peaks near
	// 12 m/s on foot; racing cyclists hold about 25 m/s only in a sprint;
	// elite rowers average about 6 m/s over 2 km; ellipticals and stair
	// climbers are slower than running.
	maxSpeed float64
}

// setLimits holds the machine types whose sets are cardio; every other
// type is strength. Keep it in step with machines.machine_type.
var setLimits = map[string]machineLimits{
	"treadmill":     {cardio: true, maxSpeed: 12},
	"bike":          {cardio: true, maxSpeed: 25},
	"rower":         {cardio: true, maxSpeed: 7},
	"elliptical":    {cardio: true, maxSpeed: 10},
	"stair_climber": {cardio: true, maxSpeed: 5},
}

const (
	// maxKcalPerMinute is beyond what elite athletes burn at their peak
	// (about 25–35 kcal/min).
	maxKcalPerMinute = 40
	// maxRepsPerSecond is faster than any controlled repetition on a machine.
	maxRepsPerSecond = 3
)

// CheckSet refuses a set that cannot have happened on a machine of type
// machineType, naming the offending field (as in the ReportActivity
// request: set.<field>) in an invalid_argument error.
func CheckSet(machineType string, s SetValues) error {
	lim := setLimits[machineType]
	kind := strings.ReplaceAll(machineType, "_", " ")
	if s.Reps <= 0 && s.DurationSeconds <= 0 {
		return apperr.InvalidArgument("set.reps", "a set needs some work: reps or duration_seconds above zero")
	}
	if lim.cardio && s.WeightKg > 0 {
		return apperr.InvalidArgument("set.weight_kg", "a %s takes no weight", kind)
	}
	if !lim.cardio && s.DistanceM > 0 {
		return apperr.InvalidArgument("set.distance_m", "a %s covers no distance", kind)
	}
	if s.DistanceM > 0 {
		if s.DurationSeconds <= 0 {
			return apperr.InvalidArgument("set.duration_seconds", "a distance needs the duration it took")
		}
		if speed := s.DistanceM / float64(s.DurationSeconds); speed > lim.maxSpeed {
			return apperr.InvalidArgument("set.distance_m", "an average of %.1f m/s is not humanly possible on a %s (at most %g m/s)", speed, kind, lim.maxSpeed)
		}
	}
	if s.Calories > 0 {
		if s.DurationSeconds <= 0 {
			return apperr.InvalidArgument("set.calories", "calories need the duration they were burnt in")
		}
		if perMin := float64(s.Calories) * 60 / float64(s.DurationSeconds); perMin > maxKcalPerMinute {
			return apperr.InvalidArgument("set.calories", "%.0f kcal per minute is not humanly possible (at most %d)", perMin, maxKcalPerMinute)
		}
	}
	if s.Reps > 0 && s.DurationSeconds > 0 {
		if perSec := float64(s.Reps) / float64(s.DurationSeconds); perSec > maxRepsPerSecond {
			return apperr.InvalidArgument("set.reps", "%.1f repetitions per second is not humanly possible (at most %d)", perSec, maxRepsPerSecond)
		}
	}
	return nil
}
