package floor

import "time"

// Settings tune the gym floor; config.FloorConfig is where they come from.
type Settings struct {
	// SessionTimeoutOverride, when set, replaces every branch's
	// max_session_minutes (development and tests only).
	SessionTimeoutOverride time.Duration
	// IdleUnlinkOverride, when set, replaces every branch's
	// idle_unlink_minutes (development and tests only).
	IdleUnlinkOverride time.Duration
	// MachineOfflineAfter is how long a console may stay silent before its
	// machine is shown offline (0 → 60s).
	MachineOfflineAfter time.Duration
	// MaxStreamsPerUser and MaxStreamsPerDevice cap the live streams one
	// account or device holds on one process (0 → 8 and 2).
	MaxStreamsPerUser   int
	MaxStreamsPerDevice int
}

// WithDefaults returns s with zero fields set to their defaults.
func (s Settings) WithDefaults() Settings {
	if s.MachineOfflineAfter <= 0 {
		s.MachineOfflineAfter = 60 * time.Second
	}
	if s.MaxStreamsPerUser <= 0 {
		s.MaxStreamsPerUser = 8
	}
	if s.MaxStreamsPerDevice <= 0 {
		s.MaxStreamsPerDevice = 2
	}
	return s
}

// SessionLength is how long a session at a branch with maxMinutes lasts.
func (s Settings) SessionLength(maxMinutes int32) time.Duration {
	if s.SessionTimeoutOverride > 0 {
		return s.SessionTimeoutOverride
	}
	return time.Duration(maxMinutes) * time.Minute
}

// IdleUnlinkAfter is how long a link at a branch with idleMinutes may go
// without activity.
func (s Settings) IdleUnlinkAfter(idleMinutes int32) time.Duration {
	if s.IdleUnlinkOverride > 0 {
		return s.IdleUnlinkOverride
	}
	return time.Duration(idleMinutes) * time.Minute
}
