package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Issued is the role of the receipts we signed for messages we received.
// (The peer's receipts for messages we sent live in the message's Record,
// written with the event they attest.) Other roles keep apart receipts that
// must never answer for the message itself: conflicts, unopened copies.
const Issued = "issued"

// Receipts stores the exact bytes of signed receipts (bucket cmx_receipts).
type Receipts struct{ kv jetstream.KeyValue }

// NewReceipts wraps the cmx_receipts bucket.
func NewReceipts(kv jetstream.KeyValue) *Receipts { return &Receipts{kv: kv} }

func receiptKey(role, msgID, status string) string { return role + "." + msgID + "." + status }

// Put stores token unless a receipt for (role, msgID, status) exists. It
// returns the stored bytes — the original ones when the key was taken — and
// whether token was the one stored.
func (r *Receipts) Put(ctx context.Context, role, msgID, status string, token []byte) ([]byte, bool, error) {
	key := receiptKey(role, msgID, status)
	if _, err := r.kv.Create(ctx, key, token); err == nil {
		return token, true, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, false, fmt.Errorf("ledger: store receipt %s: %w", key, err)
	}
	e, err := r.kv.Get(ctx, key)
	if err != nil {
		return nil, false, fmt.Errorf("ledger: read receipt %s: %w", key, err)
	}
	return e.Value(), false, nil
}

// Get returns the stored receipt, or ErrNotFound.
func (r *Receipts) Get(ctx context.Context, role, msgID, status string) ([]byte, error) {
	e, err := r.kv.Get(ctx, receiptKey(role, msgID, status))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// Stored is one stored receipt.
type Stored struct {
	Status string
	Token  []byte
}

// All returns every stored receipt of msgID for role, in status order
// accepted, delivered, rejected.
func (r *Receipts) All(ctx context.Context, role, msgID string) ([]Stored, error) {
	var out []Stored
	for _, st := range []string{"accepted", "delivered", "rejected"} {
		b, err := r.Get(ctx, role, msgID, st)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Stored{Status: st, Token: b})
	}
	return out, nil
}

// Quarantine keeps a receipt that failed matching as evidence, keyed by its
// digest, so it is never lost and never counted.
func (r *Receipts) Quarantine(ctx context.Context, digest string, token []byte) error {
	key := "quarantine." + digest // base64url is a valid KV key alphabet
	if _, err := r.kv.Create(ctx, key, token); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("ledger: quarantine: %w", err)
	}
	return nil
}
