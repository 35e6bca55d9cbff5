package server

import (
	"errors"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
)

// Connect marshals every message a stream sends on its own, so without
// help each of a branch's thousands of watchers would encode the same
// machine change again. These codecs recognise a WatchMachinesResponse
// carrying a feed event's shared Machine and write the event's bytes,
// encoded once, around the stream's own sequence number. Any other message
// is encoded exactly as Connect's default codecs do.

// Field numbers of WatchMachinesResponse the codecs write.
const (
	watchFieldSequence = 1
	watchFieldMachine  = 3
)

// machineCodecOptions returns the handler options installing the codecs.
func machineCodecOptions(feed *machineFeed) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(&machineProtoCodec{feed: feed}),
		connect.WithCodec(&machineJSONCodec{feed: feed, name: "json"}),
		connect.WithCodec(&machineJSONCodec{feed: feed, name: "json; charset=utf-8"}),
	}
}

var errNotProtoMessage = errors.New("server: codec: message is not a protobuf message")

// sharedMachineEvent returns the feed event whose Machine msg carries, when
// msg is a WatchMachinesResponse holding one.
func sharedMachineEvent(feed *machineFeed, msg any) (*nxgv1.WatchMachinesResponse, *machineEvent, bool) {
	r, ok := msg.(*nxgv1.WatchMachinesResponse)
	if !ok {
		return nil, nil, false
	}
	m := r.GetMachine()
	if m == nil {
		return nil, nil, false
	}
	ev, ok := feed.eventFor(m)
	return r, ev, ok
}

// machineProtoCodec is Connect's binary protobuf codec, with shared event
// bytes.
type machineProtoCodec struct{ feed *machineFeed }

func (c *machineProtoCodec) Name() string { return "proto" }

func (c *machineProtoCodec) IsBinary() bool { return true }

func (c *machineProtoCodec) Marshal(msg any) ([]byte, error) {
	return c.MarshalAppend(nil, msg)
}

// MarshalAppend writes the sequence, then the event's machine as field 3:
// the same bytes proto.Marshal produces, without encoding the machine.
func (c *machineProtoCodec) MarshalAppend(dst []byte, msg any) ([]byte, error) {
	if r, ev, ok := sharedMachineEvent(c.feed, msg); ok {
		if seq := r.GetSequence(); seq != 0 {
			dst = protowire.AppendTag(dst, watchFieldSequence, protowire.VarintType)
			dst = protowire.AppendVarint(dst, seq)
		}
		dst = protowire.AppendTag(dst, watchFieldMachine, protowire.BytesType)
		return protowire.AppendBytes(dst, ev.protoBytes()), nil
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, errNotProtoMessage
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c *machineProtoCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return errNotProtoMessage
	}
	return proto.Unmarshal(data, m)
}

// machineJSONCodec is Connect's protojson codec, with shared event bytes.
type machineJSONCodec struct {
	feed *machineFeed
	name string
}

func (c *machineJSONCodec) Name() string { return c.name }

func (c *machineJSONCodec) IsBinary() bool { return false }

func (c *machineJSONCodec) Marshal(msg any) ([]byte, error) {
	return c.MarshalAppend(nil, msg)
}

// MarshalAppend writes {"sequence":"N","machine":<event JSON>}, what
// protojson writes for the message (uint64 as a string, as protojson does).
func (c *machineJSONCodec) MarshalAppend(dst []byte, msg any) ([]byte, error) {
	if r, ev, ok := sharedMachineEvent(c.feed, msg); ok {
		dst = append(dst, '{')
		if seq := r.GetSequence(); seq != 0 {
			dst = append(dst, `"sequence":"`...)
			dst = strconv.AppendUint(dst, seq, 10)
			dst = append(dst, `",`...)
		}
		dst = append(dst, `"machine":`...)
		dst = append(dst, ev.jsonBytes()...)
		return append(dst, '}'), nil
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, errNotProtoMessage
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c *machineJSONCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return errNotProtoMessage
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
}
