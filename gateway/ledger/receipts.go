package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Receipts stores the exact bytes of signed receipts that must never answer
// for a message itself (bucket cmx_receipts), each under a role: our
// receipts for conflicting or unopenable copies, and peer receipts that
// failed matching (quarantine). A message's own receipts live in its record.
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

// Quarantine keeps a receipt that failed matching as evidence, keyed by its
// digest, so it is never lost and never counted.
func (r *Receipts) Quarantine(ctx context.Context, digest string, token []byte) error {
	key := "quarantine." + digest // base64url is a valid KV key alphabet
	if _, err := r.kv.Create(ctx, key, token); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("ledger: quarantine: %w", err)
	}
	return nil
}
