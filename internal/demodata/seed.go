// Package demodata seeds a demo gym network for development: branches with
// opening hours and machines on their floors. Seeding is idempotent (rows
// are upserted by their natural keys), so every start of cmd/nxg-dev may run
// it, and two dev servers sharing one database agree on the data.
package demodata

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
)

// Branch is a demo branch and what stands on its floor.
type Branch struct {
	Name     string
	Address  string
	Timezone string
	Capacity int32
	// Hours maps ISO weekday (1 = Monday) to one opening interval, "HH:MM".
	Hours    map[int16][2]string
	Machines []Machine
}

// Machine is a demo machine; Tag is its NFC/QR tag, unique network-wide.
type Machine struct {
	Name, Type, Tag string
}

// Branches is the demo network: two branches in different time zones, so
// opening-hour logic is exercised across zones.
var Branches = []Branch{
	{
		Name: "NXG Shoreditch", Address: "12 Curtain Road, London EC2A 3NQ", Timezone: "Europe/London", Capacity: 180,
		Hours: weekdays("06:00", "23:00", "08:00", "20:00"),
		Machines: []Machine{
			{"Treadmill 1", "treadmill", "nxg-ldn-tm-01"},
			{"Treadmill 2", "treadmill", "nxg-ldn-tm-02"},
			{"Spin Bike 1", "bike", "nxg-ldn-bk-01"},
			{"Rower 1", "rower", "nxg-ldn-rw-01"},
			{"Chest Press", "chest_press", "nxg-ldn-cp-01"},
			{"Leg Press", "leg_press", "nxg-ldn-lp-01"},
			{"Cable Tower", "cable", "nxg-ldn-cb-01"},
			{"Lat Pulldown", "lat_pulldown", "nxg-ldn-lt-01"},
		},
	},
	{
		Name: "NXG Williamsburg", Address: "85 N 3rd St, Brooklyn, NY 11249", Timezone: "America/New_York", Capacity: 220,
		Hours: weekdays("05:00", "24:00", "07:00", "22:00"),
		Machines: []Machine{
			{"Treadmill A", "treadmill", "nxg-nyc-tm-01"},
			{"Treadmill B", "treadmill", "nxg-nyc-tm-02"},
			{"Air Bike", "bike", "nxg-nyc-bk-01"},
			{"Elliptical", "elliptical", "nxg-nyc-el-01"},
			{"Rower", "rower", "nxg-nyc-rw-01"},
			{"Shoulder Press", "shoulder_press", "nxg-nyc-sp-01"},
			{"Leg Press", "leg_press", "nxg-nyc-lp-01"},
			{"Smith Machine", "smith", "nxg-nyc-sm-01"},
		},
	},
}

// weekdays opens Monday to Friday from wOpen to wClose and at weekends from
// eOpen to eClose.
func weekdays(wOpen, wClose, eOpen, eClose string) map[int16][2]string {
	m := map[int16][2]string{}
	for d := int16(1); d <= 5; d++ {
		m[d] = [2]string{wOpen, wClose}
	}
	m[6] = [2]string{eOpen, eClose}
	m[7] = [2]string{eOpen, eClose}
	return m
}

// Seed upserts the demo network in one transaction.
func Seed(ctx context.Context, pool *pgxpool.Pool) error {
	q := dbsqlc.New()
	return db.WithTx(ctx, pool, func(tx pgx.Tx) error {
		for _, b := range Branches {
			if _, err := time.LoadLocation(b.Timezone); err != nil {
				return fmt.Errorf("demo branch %s: %w", b.Name, err)
			}
			row, err := q.BranchUpsert(ctx, tx, dbsqlc.BranchUpsertParams{
				Name: b.Name, Address: b.Address, Timezone: b.Timezone, Capacity: b.Capacity,
			})
			if err != nil {
				return fmt.Errorf("upsert branch %s: %w", b.Name, err)
			}
			if err := q.BranchOpeningHoursDelete(ctx, tx, row.ID); err != nil {
				return err
			}
			for day := int16(1); day <= 7; day++ {
				h, ok := b.Hours[day]
				if !ok {
					continue
				}
				opens, err := clock(h[0])
				if err != nil {
					return err
				}
				closes, err := clock(h[1])
				if err != nil {
					return err
				}
				if err := q.BranchOpeningHoursInsert(ctx, tx, dbsqlc.BranchOpeningHoursInsertParams{
					BranchID: row.ID, Weekday: day, OpensAt: opens, ClosesAt: closes,
				}); err != nil {
					return fmt.Errorf("opening hours of %s: %w", b.Name, err)
				}
			}
			for _, m := range b.Machines {
				if _, err := q.MachineUpsert(ctx, tx, dbsqlc.MachineUpsertParams{
					BranchID: row.ID, Name: m.Name, MachineType: m.Type, NfcTag: m.Tag,
				}); err != nil {
					return fmt.Errorf("upsert machine %s of %s: %w", m.Name, b.Name, err)
				}
			}
		}
		return nil
	})
}

// clock parses "HH:MM" (24:00 allowed) into a PostgreSQL time.
func clock(s string) (pgtype.Time, error) {
	var h, m int64
	if _, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || h < 0 || h > 24 || m < 0 || m > 59 || (h == 24 && m != 0) {
		return pgtype.Time{}, fmt.Errorf("bad clock time %q", s)
	}
	return pgtype.Time{Microseconds: (h*60 + m) * 60_000_000, Valid: true}, nil
}
