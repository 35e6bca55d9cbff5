package main

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
)

// The load tool receives every change on every subscriber: at 10,000
// subscribers and 50 changes a second, half a million messages a second on
// one core. Decoding each one fully (a protobuf Machine with every field,
// or a JSON object into a tree) would make the tool, not the server, the
// limit of what is measured. The change messages' hot path therefore reads
// only the four fields measured, straight from the wire; anything it does
// not recognise falls back to the full decoders, which also check that the
// messages are what the contract says.

// Field numbers read from the wire (nxg/v1/machine.proto).
const (
	watchSequenceField = 1 // WatchMachinesResponse.sequence
	watchMachineField  = 3 // WatchMachinesResponse.machine
	machineIDField     = 1 // Machine.id
	machineUpdatedAt   = 7 // Machine.updated_at
	machineVersion     = 8 // Machine.version
	timestampSeconds   = 1 // google.protobuf.Timestamp.seconds
	timestampNanos     = 2 // google.protobuf.Timestamp.nanos
)

var errNotAChange = errors.New("not a change message")

// watchCodec is the protobuf codec of the tool's Connect streams: change
// messages are decoded by decodeProtoChange into a Machine that carries
// only id, version and updated_at; everything else by proto.Unmarshal.
type watchCodec struct{}

func (watchCodec) Name() string { return "proto" }

func (watchCodec) Marshal(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("watch codec: not a protobuf message")
	}
	return proto.Marshal(m)
}

func (watchCodec) Unmarshal(data []byte, msg any) error {
	if r, ok := msg.(*nxgv1.WatchMachinesResponse); ok {
		if err := decodeProtoChange(data, r); err == nil {
			return nil
		}
		proto.Reset(r)
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return errors.New("watch codec: not a protobuf message")
	}
	return proto.Unmarshal(data, m)
}

// decodeProtoChange reads a WatchMachinesResponse that carries one machine
// into r. It returns errNotAChange for a snapshot, and an error for any
// field it does not expect, so that the caller decodes those fully.
func decodeProtoChange(data []byte, r *nxgv1.WatchMachinesResponse) error {
	var seq uint64
	var machine []byte
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		switch {
		case num == watchSequenceField && typ == protowire.VarintType:
			seq, n = protowire.ConsumeVarint(data)
		case num == watchMachineField && typ == protowire.BytesType:
			machine, n = protowire.ConsumeBytes(data)
		default:
			return errNotAChange
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
	}
	if machine == nil {
		return errNotAChange
	}
	m := &nxgv1.Machine{}
	for len(machine) > 0 {
		num, typ, n := protowire.ConsumeTag(machine)
		if n < 0 {
			return protowire.ParseError(n)
		}
		machine = machine[n:]
		switch {
		case num == machineIDField && typ == protowire.BytesType:
			var id []byte
			id, n = protowire.ConsumeBytes(machine)
			m.Id = string(id)
		case num == machineVersion && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(machine)
			m.Version = int64(v)
		case num == machineUpdatedAt && typ == protowire.BytesType:
			var ts []byte
			ts, n = protowire.ConsumeBytes(machine)
			if n >= 0 {
				var err error
				if m.UpdatedAt, err = decodeTimestamp(ts); err != nil {
					return err
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, machine)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		machine = machine[n:]
	}
	r.Sequence = seq
	r.Event = &nxgv1.WatchMachinesResponse_Machine{Machine: m}
	return nil
}

func decodeTimestamp(data []byte) (*timestamppb.Timestamp, error) {
	ts := &timestamppb.Timestamp{}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		data = data[n:]
		if typ != protowire.VarintType || (num != timestampSeconds && num != timestampNanos) {
			return nil, errors.New("unexpected field in Timestamp")
		}
		v, n := protowire.ConsumeVarint(data)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		data = data[n:]
		if num == timestampSeconds {
			ts.Seconds = int64(v)
		} else {
			ts.Nanos = int32(v)
		}
	}
	return ts, nil
}

// Keys of a change frame as protojson writes it (lowerCamelCase names,
// 64-bit integers as strings): {"sequence":"N","machine":{"id":"...",
// ...,"updatedAt":"...","version":"N"}}.
var (
	keySequence  = []byte(`"sequence":"`)
	keyMachine   = []byte(`"machine":{`)
	keyID        = []byte(`"id":"`)
	keyUpdatedAt = []byte(`"updatedAt":"`)
	keyVersion   = []byte(`"version":"`)
)

// scanWSChange reads a change frame without parsing the JSON into a tree.
// It returns ok=false for anything that is not exactly the shape the
// server writes, so the caller parses that frame fully.
func scanWSChange(frame []byte) (c wsChange, ok bool) {
	seq, rest, ok := stringAfter(frame, keySequence)
	if !ok {
		return c, false
	}
	i := bytes.Index(rest, keyMachine)
	if i < 0 {
		return c, false
	}
	machine := rest[i+len(keyMachine):]
	id, _, ok := stringAfter(machine, keyID)
	if !ok || len(id) == 0 {
		return c, false
	}
	updated, _, ok := stringAfter(machine, keyUpdatedAt)
	if !ok {
		return c, false
	}
	version, _, ok := stringAfter(machine, keyVersion)
	if !ok {
		return c, false
	}
	var err error
	if c.seq, err = strconv.ParseUint(string(seq), 10, 64); err != nil {
		return c, false
	}
	v, err := strconv.ParseInt(string(version), 10, 64)
	if err != nil {
		return c, false
	}
	if c.updatedAt, err = time.Parse(time.RFC3339Nano, string(updated)); err != nil {
		return c, false
	}
	c.id, c.version = string(id), v
	return c, true
}

// stringAfter returns the JSON string value that follows key (which ends
// with its opening quote), and what follows it. Values with escapes are
// refused: ids, times and numbers never have any.
func stringAfter(data, key []byte) (value, rest []byte, ok bool) {
	i := bytes.Index(data, key)
	if i < 0 {
		return nil, nil, false
	}
	data = data[i+len(key):]
	end := bytes.IndexByte(data, '"')
	if end < 0 || bytes.IndexByte(data[:end], '\\') >= 0 {
		return nil, nil, false
	}
	return data[:end], data[end+1:], true
}
