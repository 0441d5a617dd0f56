// Package api holds the JSON shapes of the cmx HTTP API (DESIGN.md §6) and the
// small error vocabulary that the gateway's stages use to talk to the HTTP
// edge. It imports nothing from the stages, so every stage may import it.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Message statuses, in the order a sent message normally passes them.
const (
	StatusAccepted  = "accepted"  // durable in our outbox (202 given)
	StatusRelayed   = "relayed"   // durable in the peer's inbound stream
	StatusReceived  = "received"  // the peer's signed accepted receipt verified
	StatusDelivered = "delivered" // the peer's signed delivered receipt verified
	StatusRejected  = "rejected"  // the peer's signed rejected receipt verified
	StatusFailed    = "failed"    // no terminal receipt before expiry; an operator was alerted
)

// Directions of a message as seen by this gateway.
const (
	Outbound = "outbound"
	Inbound  = "inbound"
)

// SubmitRequest is the body of POST /v1/messages.
type SubmitRequest struct {
	Type          string          `json:"type"`
	To            string          `json:"to"`
	Recipient     string          `json:"recipient,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Marking       string          `json:"marking,omitempty"`
	Body          json.RawMessage `json:"body"`
}

// SubmitResponse is the 202 answer to POST /v1/messages.
type SubmitResponse struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// Event is one step of a message's timeline.
type Event struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"` // rejection reason code
	Detail string    `json:"detail,omitempty"`
}

// Message is the answer to GET /v1/messages/{id}.
type Message struct {
	ID            string  `json:"id"`
	Direction     string  `json:"direction"`
	Type          string  `json:"type"`
	From          string  `json:"from"`
	To            string  `json:"to"`
	Sender        string  `json:"sender"`
	Recipient     string  `json:"recipient,omitempty"`
	CorrelationID string  `json:"correlation_id,omitempty"`
	Marking       string  `json:"marking,omitempty"`
	Status        string  `json:"status"`
	Timeline      []Event `json:"timeline"`
	TraceID       string  `json:"trace_id,omitempty"`
	EnvSHA256     string  `json:"env_sha256,omitempty"`
	MsgSHA256     string  `json:"msg_sha256,omitempty"`
}

// Delivery is what an agency receives, by webhook POST or from its pull inbox
// (DESIGN.md §6). JWS is the original signed message, so the agency can verify
// the foreign signature itself.
type Delivery struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	From          string          `json:"from"`
	Sender        string          `json:"sender"`
	Recipient     string          `json:"recipient"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Marking       string          `json:"marking,omitempty"`
	Body          json.RawMessage `json:"body"`
	JWS           string          `json:"jws"`
}

// Receipts is the answer to GET /v1/messages/{id}/receipts: compact JWS strings.
type Receipts struct {
	ID       string   `json:"id"`
	Receipts []string `json:"receipts"`
}

// Evidence is the answer to GET /v1/messages/{id}/evidence: everything an
// auditor needs to check offline what was sent and what the peer attested.
type Evidence struct {
	ID        string   `json:"id"`
	Direction string   `json:"direction"`
	Envelope  string   `json:"envelope,omitempty"` // JWE compact, as sent or received
	Message   string   `json:"message,omitempty"`  // inner JWS compact
	Receipts  []string `json:"receipts"`
	// Chains are the PEM certificate chains of the signers (ours and the peer's).
	Chains map[string]string `json:"chains,omitempty"`
}

// PeerStatus is one entry of GET /v1/peers.
type PeerStatus struct {
	Party           string     `json:"party"`
	Link            string     `json:"link"` // "up" | "down"
	Backlog         uint64     `json:"backlog"`
	OldestAgeSecs   float64    `json:"oldest_age_seconds"`
	LastReceiptAt   *time.Time `json:"last_receipt_at,omitempty"` // when we last accepted a receipt from the peer
	AwaitingReceipt uint64     `json:"awaiting_receipt"`          // sent messages without the peer's accepted receipt
	// ReceiptLagSecs is the age of the oldest sent message still without the
	// peer's accepted receipt (0 when none waits).
	ReceiptLagSecs float64 `json:"receipt_lag_seconds"`
}

// Kind classifies an error for the HTTP edge, which alone chooses status codes.
type Kind int

const (
	KindInternal      Kind = iota // 500
	KindInvalid                   // 400: malformed request
	KindUnprocessable             // 422: well-formed but not acceptable (schema, unknown recipient)
	KindForbidden                 // 403: authenticated but not allowed
	KindNotFound                  // 404
	KindConflict                  // 409
	KindUnavailable               // 503: try again later with the same Idempotency-Key
)

// Error is a classified error from a stage. Code is a stable problem code
// (the last part of the problem+json "type"); Field names the offending field.
type Error struct {
	Kind   Kind
	Code   string
	Field  string
	Detail string
	Err    error
}

func (e *Error) Error() string {
	s := e.Code
	if e.Field != "" {
		s += " at " + e.Field
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind and code.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// KindOf returns the Kind of err (KindInternal when err carries none).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ProblemTypePrefix starts the "type" of every problem+json answer; the rest
// is a stable code, e.g. "urn:cmx:problem:rate-limited".
const ProblemTypePrefix = "urn:cmx:problem:"

// Problem is the body of every error answer (RFC 9457, application/problem+json).
// Field names the offending request field when known.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Field    string `json:"field,omitempty"`
}

// Inbox is the answer to GET /v1/inbox: deliveries waiting for an ack.
type Inbox struct {
	Deliveries []Delivery `json:"deliveries"`
}

// Peers is the answer to GET /v1/peers.
type Peers struct {
	Peers []PeerStatus `json:"peers"`
}
