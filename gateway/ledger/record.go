package ledger

import (
	"iter"
	"maps"
	"slices"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Record is what the ledger knows about one message, sent or received.
type Record struct {
	ID            string      `json:"id"`
	Direction     string      `json:"direction"` // api.Outbound | api.Inbound
	Type          string      `json:"type"`
	From          string      `json:"from"`
	To            string      `json:"to"`
	Sender        string      `json:"sender"`
	Recipient     string      `json:"recipient,omitempty"` // agency, "JP:MHLW"
	CorrelationID string      `json:"correlation_id,omitempty"`
	Marking       string      `json:"marking,omitempty"`
	Seq           uint64      `json:"seq,omitempty"` // envelope's sequence in CMX_OUT (sent) or CMX_IN (received)
	EnvSHA256     string      `json:"env_sha256"`
	MsgSHA256     string      `json:"msg_sha256,omitempty"`
	Expiry        int64       `json:"exp,omitempty"`
	TraceID       string      `json:"trace_id,omitempty"`
	Traceparent   string      `json:"traceparent,omitempty"` // our span that stored the envelope: receipts continue from it
	Timeline      []api.Event `json:"timeline"`
	// Conflicts counts equivocations: other envelopes seen under this id.
	Conflicts []string `json:"conflicts,omitempty"`
	// Receipts holds the exact bytes of each receipt by status (accepted,
	// delivered, rejected): for a message we sent, the peer's; for one we
	// received, our own. Each is stored with the event it attests, in one
	// write; the first bytes stored win (PutReceipt).
	Receipts map[string]string `json:"receipts,omitempty"`

	rev uint64 // KV revision this copy was read or written at; 0 if unknown
}

// clone returns a copy whose slices can be changed independently.
func (r *Record) clone() *Record {
	c := *r
	c.Timeline = slices.Clone(r.Timeline)
	c.Conflicts = slices.Clone(r.Conflicts)
	c.Receipts = maps.Clone(r.Receipts)
	return &c
}

// rank orders statuses: a record's status is its highest-ranked event, so
// receipts arriving out of order never move a message backwards.
// A signed receipt outranks "failed": failed only says that no terminal
// receipt came before exp, and one that comes later is the truth.
var rank = map[string]int{
	api.StatusAccepted:  1,
	api.StatusRelayed:   2,
	api.StatusReceived:  3,
	api.StatusFailed:    4,
	api.StatusDelivered: 5,
	api.StatusRejected:  6,
}

// Status is the most advanced status in the timeline.
func (r *Record) Status() string {
	best := ""
	for _, e := range r.Timeline {
		if rank[e.Status] > rank[best] {
			best = e.Status
		}
	}
	return best
}

// Has reports whether the timeline holds status.
func (r *Record) Has(status string) bool {
	return slices.ContainsFunc(r.Timeline, func(e api.Event) bool { return e.Status == status })
}

// Terminal reports whether the message reached an end state.
func (r *Record) Terminal() bool {
	switch r.Status() {
	case api.StatusDelivered, api.StatusRejected, api.StatusFailed:
		return true
	}
	return false
}

// PutReceipt keeps token as the record's receipt for status unless it holds
// one already: the first stored bytes win (a re-signed receipt differs, ECDSA
// is randomised). It returns the bytes the record now holds for status and
// whether the record changed.
func (r *Record) PutReceipt(status string, token []byte) (stored string, changed bool) {
	if have := r.Receipts[status]; have != "" {
		return have, false
	}
	if r.Receipts == nil {
		r.Receipts = map[string]string{}
	}
	r.Receipts[status] = string(token)
	return r.Receipts[status], true
}

// ReceiptsInOrder yields the receipts of stored (status → exact bytes, as
// in Record.Receipts) in the order they are listed and sent: accepted,
// delivered, rejected.
func ReceiptsInOrder(stored map[string]string) iter.Seq2[string, string] {
	return func(yield func(status, token string) bool) {
		for _, st := range [...]string{api.StatusAccepted, api.StatusDelivered, api.StatusRejected} {
			if token := stored[st]; token != "" && !yield(st, token) {
				return
			}
		}
	}
}

// AddEvent appends e unless the timeline already holds that status; it
// reports whether the record changed.
func (r *Record) AddEvent(e api.Event) bool {
	if r.Has(e.Status) {
		return false
	}
	r.Timeline = append(r.Timeline, e)
	slices.SortStableFunc(r.Timeline, func(a, b api.Event) int { return rank[a.Status] - rank[b.Status] })
	return true
}

// API renders the record as the HTTP API's Message.
func (r *Record) API() *api.Message {
	return &api.Message{
		ID: r.ID, Direction: r.Direction, Type: r.Type, From: r.From, To: r.To,
		Sender: r.Sender, Recipient: r.Recipient, CorrelationID: r.CorrelationID,
		Marking: r.Marking, Status: r.Status(), Timeline: slices.Clone(r.Timeline),
		TraceID: r.TraceID, EnvSHA256: r.EnvSHA256, MsgSHA256: r.MsgSHA256,
	}
}

// Event is a convenience constructor.
func Event(status string, at time.Time, reason string) api.Event {
	return api.Event{Status: status, At: at.UTC(), Reason: reason}
}
