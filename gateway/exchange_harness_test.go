package gateway_test

// The harness of the end-to-end tests: a running pair with programmable JP
// agencies, and the checks every scenario shares (receipts identical on both
// sides and verified against JP's pinned roots, effects counted per id).

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery/agencytest"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// exchange is a running pair whose JP agencies are all programmable fakes.
type exchange struct {
	*pair.Pair
	t   *testing.T
	ctx context.Context
	jp  map[envelope.Type]*agencytest.Agency // JP's receiving agency per type
	log *logBuf
}

// start runs a pair on t.TempDir() with agencytest webhooks for METI, MHLW
// and MOF; it stops at cleanup and prints the gateways' logs if t failed.
func start(t *testing.T, opts pair.Options) *exchange {
	t.Helper()
	x := &exchange{t: t, ctx: t.Context(), jp: map[envelope.Type]*agencytest.Agency{}, log: &logBuf{}}
	opts.Dir = t.TempDir()
	opts.Logger = slog.New(slog.NewTextHandler(x.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.Webhooks = map[string]string{}
	for _, typ := range envelope.Types {
		a := agencytest.New(t)
		x.jp[typ] = a
		opts.Webhooks["JP:"+pair.AgencyFor("JP", typ)] = a.URL()
	}
	p, err := pair.Start(x.ctx, opts)
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	x.Pair = p
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("pair stop: %v", err)
		}
		if t.Failed() {
			x.log.dump(t, 150)
		}
	})
	return x
}

// logBuf collects the gateways' logs, shown only when a test fails.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) dump(t *testing.T, last int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(l.b.String()), "\n")
	var warn []string
	for _, line := range lines {
		if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) && !strings.Contains(line, "Plaintext passwords") {
			warn = append(warn, line)
		}
	}
	t.Logf("warnings and errors of the gateways (%d):\n%s", len(warn), strings.Join(warn[max(0, len(warn)-300):], "\n"))
	t.Logf("last %d log lines of the gateways:\n%s", last, strings.Join(lines[max(0, len(lines)-last):], "\n"))
}

// send submits the example message of typ from the US agency for typ.
func (x *exchange) send(typ envelope.Type, key string) *pair.Sent {
	x.t.Helper()
	m, err := x.Send(x.ctx, "US", typ, key)
	if err != nil {
		x.t.Fatalf("send %s: %v", typ, err)
	}
	return m
}

// wait waits until m reaches want and fails unless it did.
func (x *exchange) wait(m *pair.Sent, want string, timeout time.Duration) *api.Message {
	x.t.Helper()
	got, err := x.WaitStatus(x.ctx, m, want, timeout)
	if err != nil {
		x.t.Fatalf("%s %s: %v", m.Type, m.ID, err)
	}
	if got.Status != want {
		x.t.Fatalf("%s %s: status %s, want %s; timeline %+v", m.Type, m.ID, got.Status, want, got.Timeline)
	}
	return got
}

// status reads m's status at the sender.
func (x *exchange) status(m *pair.Sent) string {
	x.t.Helper()
	got, err := x.US.Client(m.Agency).Message(x.ctx, m.ID)
	if err != nil {
		x.t.Fatalf("status of %s: %v", m.ID, err)
	}
	return got.Status
}

// receipts returns the receipts of id as side's agency sees them.
func (x *exchange) receipts(s *pair.Side, agency, id string) []string {
	x.t.Helper()
	r, err := s.Client(agency).Receipts(x.ctx, id)
	if err != nil {
		x.t.Fatalf("%s receipts of %s: %v", s.Party, id, err)
	}
	return r.Receipts
}

// sameReceipts checks that the sender stored exactly the bytes JP issued for
// m (invariant 4), and returns them verified, in status order.
func (x *exchange) sameReceipts(m *pair.Sent) []*envelope.VerifiedReceipt {
	x.t.Helper()
	us := x.receipts(x.US, m.Agency, m.ID)
	jp := x.receipts(x.JP, "OPS", m.ID)
	if !slices.Equal(us, jp) {
		x.t.Fatalf("%s: receipts at the sender differ from those JP issued:\nUS %q\nJP %q", m.ID, us, jp)
	}
	if again := x.receipts(x.US, m.Agency, m.ID); !slices.Equal(again, us) {
		x.t.Fatalf("%s: receipts changed between two reads", m.ID)
	}
	out := make([]*envelope.VerifiedReceipt, len(us))
	for i, tok := range us {
		out[i] = x.verify([]byte(tok))
		if out[i].Msg != m.ID {
			x.t.Fatalf("receipt of %s names message %s", m.ID, out[i].Msg)
		}
	}
	return out
}

// statuses lists the statuses of rs, e.g. "accepted,delivered".
func statuses(rs []*envelope.VerifiedReceipt) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r.Status))
	}
	return strings.Join(s, ",")
}

// verify checks a JP receipt as an auditor at US would: against JP's pinned roots.
func (x *exchange) verify(token []byte) *envelope.VerifiedReceipt {
	x.t.Helper()
	b, err := os.ReadFile(filepath.Join(x.JP.PKIDir, "bundle.pem"))
	if err != nil {
		x.t.Fatal(err)
	}
	roots, err := certs.ParseBundle("JP", b)
	if err != nil {
		x.t.Fatal(err)
	}
	vr, err := (&envelope.ReceiptVerifier{Self: "US", Peer: roots}).Verify(token, time.Now())
	if err != nil {
		x.t.Fatalf("receipt does not verify: %v", err)
	}
	return vr
}

// reason is the reason of the rejected event in m's timeline.
func reason(m *api.Message) string {
	for _, e := range m.Timeline {
		if e.Status == api.StatusRejected {
			return e.Reason
		}
	}
	return ""
}

// with returns x reporting to t (a subtest).
func (x *exchange) with(t *testing.T) *exchange {
	c := *x
	c.t = t
	return &c
}

// connect opens a NATS connection with side's gateway credentials.
func (x *exchange) connect(s *pair.Side) (*nats.Conn, jetstream.JetStream) {
	x.t.Helper()
	url, user, pass := s.Node.NATS()
	nc, err := transport.Connect(x.ctx, url, user, pass, nats.Name("exchange-test"))
	if err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		x.t.Fatal(err)
	}
	return nc, js
}

// consumerIdle waits until JP's inbound message consumer has settled
// everything: nothing pending, nothing awaiting an ack.
func (x *exchange) consumerIdle(js jetstream.JetStream, timeout time.Duration) {
	x.t.Helper()
	var info *jetstream.ConsumerInfo
	transporttest.WaitFor(x.t, timeout, func() bool {
		c, err := js.Consumer(x.ctx, transport.StreamIn, "inbound-msg")
		if err == nil {
			info, err = c.Info(x.ctx)
		}
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "JP inbound consumer settles every message")
}

// effects checks that agency a recorded id exactly once and saw at most
// maxHits requests for it, never two at a time (F-09).
func effects(t *testing.T, a *agencytest.Agency, id string, maxHits int) {
	t.Helper()
	if got := a.Effects(id); got != 1 {
		t.Errorf("%s: %d recorded deliveries, want 1", id, got)
	}
	if got := a.Attempts(id); got < 1 || got > maxHits {
		t.Errorf("%s: %d webhook calls, want 1..%d", id, got, maxHits)
	}
	if got := a.MaxConcurrent(id); got > 1 {
		t.Errorf("%s: %d concurrent webhook calls", id, got)
	}
}

// inboundMessages counts the messages (not receipts) in JP's CMX_IN.
func (x *exchange) inboundMessages() uint64 {
	x.t.Helper()
	_, js := x.connect(x.JP)
	s, err := js.Stream(x.ctx, transport.StreamIn)
	if err != nil {
		x.t.Fatal(err)
	}
	info, err := s.Info(x.ctx, jetstream.WithSubjectFilter(transport.XMsgSubject("us", "jp", ">")))
	if err != nil {
		x.t.Fatal(err)
	}
	n := uint64(0)
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}
