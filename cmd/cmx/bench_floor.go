package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
)

// floorRun is one measurement of the crypto floor.
type floorRun struct {
	Messages   int64   `json:"messages"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// CPUMsPerMsg is this process's CPU time per message during the loop:
	// what one message's JOSE work costs, whatever else the machine runs.
	CPUMsPerMsg float64 `json:"cpu_ms_per_msg"`
	// Mean wall time of each operation inside the loop, with every core
	// busy: seal, open, one receipt signature, one receipt verification.
	OpMicros map[string]float64 `json:"op_us"`
}

// merge combines the measurements taken just before and just after a
// phase, so that the floor of a repetition brackets its phase 1 on a
// machine whose load drifts.
func (r *floorRun) merge(o *floorRun) *floorRun {
	n, secs := r.Messages+o.Messages, r.Seconds+o.Seconds
	m := &floorRun{Messages: n, Seconds: round3(secs), MsgsPerSec: round3(float64(n) / secs), OpMicros: map[string]float64{},
		CPUMsPerMsg: round3((r.CPUMsPerMsg*float64(r.Messages) + o.CPUMsPerMsg*float64(o.Messages)) / float64(max(n, 1)))}
	for k, v := range r.OpMicros {
		m.OpMicros[k] = round3((v*float64(r.Messages) + o.OpMicros[k]*float64(o.Messages)) / float64(max(n, 1)))
	}
	return m
}

// floorKit is what the JOSE work of one message needs: both parties' keys
// and trust, as the two gateways hold them.
type floorKit struct {
	us, jp   *certs.PKI
	opener   *envelope.Opener          // JP opening US messages
	verifier *envelope.ReceiptVerifier // US verifying JP receipts
	body     json.RawMessage
}

func newFloorKit(body json.RawMessage) (*floorKit, error) {
	us, err := certs.NewPKI("US", certs.PKIOptions{})
	if err != nil {
		return nil, err
	}
	jp, err := certs.NewPKI("JP", certs.PKIOptions{})
	if err != nil {
		return nil, err
	}
	usRoots, err := certs.NewBundle("US", us.Root)
	if err != nil {
		return nil, err
	}
	jpRoots, err := certs.NewBundle("JP", jp.Root)
	if err != nil {
		return nil, err
	}
	keys, err := certs.NewKeySet(0, &certs.DecryptionKey{Cert: jp.Encryption.Cert, Key: jp.Encryption.Key, KID: jp.Encryption.KID})
	if err != nil {
		return nil, err
	}
	return &floorKit{
		us: us, jp: jp, body: body,
		opener:   &envelope.Opener{Self: "JP", Peer: usRoots, Keys: keys},
		verifier: &envelope.ReceiptVerifier{Self: "US", Peer: jpRoots},
	}, nil
}

// opTimes accumulates nanoseconds per operation of one goroutine.
type opTimes [4]time.Duration

var floorOps = [4]string{"seal", "open", "receipt_sign", "receipt_verify"}

// one does the JOSE work of one message: US seals; JP opens and signs the
// accepted and the delivered receipt; US verifies both.
func (k *floorKit) one(t *opTimes) error {
	now := time.Now()
	c := &envelope.Claims{
		Issuer: "US", Audience: "JP", ID: envelope.NewID(), IssuedAt: now.Unix(), Expiry: now.Add(24 * time.Hour).Unix(),
		Type: benchType, Schema: benchType.Schema(), Sender: "US:USTR", Recipient: "JP:METI", Marking: "TLP:AMBER", Body: k.body,
	}
	t0 := time.Now()
	sealed, err := envelope.Seal(c, k.us.Signing, k.jp.Encryption.Cert)
	t1 := time.Now()
	if err != nil {
		return err
	}
	if _, err := k.opener.Open(sealed.Envelope, now); err != nil {
		return err
	}
	t[0], t[1] = t[0]+t1.Sub(t0), t[1]+time.Since(t1)
	for _, st := range []envelope.Status{envelope.StatusAccepted, envelope.StatusDelivered} {
		r := &envelope.Receipt{Issuer: "JP", Audience: "US", IssuedAt: now.Unix(), Msg: c.ID, Status: st,
			EnvSHA256: sealed.EnvSHA256, MsgSHA256: sealed.MsgSHA256}
		if st == envelope.StatusDelivered {
			r.Recipient, r.DeliveredAt = "JP:METI", now.Unix()
		}
		t2 := time.Now()
		tok, err := envelope.IssueReceipt(r, k.jp.Signing)
		t3 := time.Now()
		if err != nil {
			return err
		}
		if _, err := k.verifier.Verify(tok, now); err != nil {
			return err
		}
		t[2], t[3] = t[2]+t3.Sub(t2), t[3]+time.Since(t3)
	}
	return nil
}

// measure runs the work of one message in a tight loop on every core for d.
func (k *floorKit) measure(ctx context.Context, d time.Duration) (*floorRun, error) {
	workers := runtime.NumCPU()
	var n atomic.Int64
	var mu sync.Mutex
	var total opTimes
	var firstErr error
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cpu0, err := procCPU(os.Getpid())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var t opTimes
			var err error
			for ctx.Err() == nil {
				if err = k.one(&t); err != nil {
					cancel()
					break
				}
				n.Add(1)
			}
			mu.Lock()
			defer mu.Unlock()
			for i := range t {
				total[i] += t[i]
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu1, err := procCPU(os.Getpid())
	if err != nil {
		return nil, err
	}
	if firstErr != nil {
		return nil, fmt.Errorf("crypto floor: %w", firstErr)
	}
	r := &floorRun{Messages: n.Load(), Seconds: secs, MsgsPerSec: float64(n.Load()) / secs, OpMicros: map[string]float64{},
		CPUMsPerMsg: (cpu1 - cpu0).Seconds() * 1000 / float64(max(n.Load(), 1))}
	for i, name := range floorOps {
		per := 1.0 // two receipts per message
		if i >= 2 {
			per = 2
		}
		r.OpMicros[name] = float64(total[i].Microseconds()) / (per * float64(max(n.Load(), 1)))
	}
	return r, nil
}
