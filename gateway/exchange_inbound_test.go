package gateway_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// peer feeds JP's inbound stream CMX_IN with crafted items, as the US side
// of the border would publish them (same subjects, same Nats-Msg-Id
// convention), and reads what JP sends back.
type peer struct {
	x          *exchange
	jp, us     jetstream.JetStream
	signer     *certs.Identity   // US gateway signing identity
	encryption *x509.Certificate // JP's encryption certificate
}

// genuine is a message sealed by the US gateway and held in its outbox.
type genuine struct {
	m      *pair.Sent
	env    []byte
	claims envelope.Claims
	token  []byte // a receipt the injection obtained, for the check
}

func newPeer(x *exchange) *peer {
	_, jp := x.connect(x.JP)
	_, us := x.connect(x.US)
	p := &peer{x: x, jp: jp, us: us}
	read := func(parts ...string) []byte {
		b, err := os.ReadFile(filepath.Join(parts...))
		if err != nil {
			x.t.Fatal(err)
		}
		return b
	}
	var err error
	p.signer, err = certs.ParseIdentity(read(x.US.PKIDir, "signing.pem"), read(x.US.PKIDir, "signing.key"))
	if err != nil {
		x.t.Fatal(err)
	}
	encs, err := certs.ParseCertificates(read(x.JP.PKIDir, "encryption.pem"))
	if err != nil {
		x.t.Fatal(err)
	}
	p.encryption = encs[0]
	return p
}

// genuine submits a labor notice at US and reads back its envelope and
// claims from the US evidence bundle.
func (p *peer) genuine() *genuine {
	x := p.x
	x.t.Helper()
	m := x.send(labor, "")
	ev, err := x.US.Client(m.Agency).Evidence(x.ctx, m.ID)
	if err != nil || ev.Envelope == "" || ev.Message == "" {
		x.t.Fatalf("evidence of %s: %v (envelope %d bytes)", m.ID, err, len(ev.Envelope))
	}
	g := &genuine{m: m, env: []byte(ev.Envelope)}
	parts := strings.Split(ev.Message, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err == nil {
		err = json.Unmarshal(payload, &g.claims)
	}
	if err != nil {
		x.t.Fatalf("claims of %s: %v", m.ID, err)
	}
	return g
}

// publish puts data into JP's CMX_IN on the subject of typ.
func (p *peer) publish(t *testing.T, typ envelope.Type, msgID string, data []byte) *jetstream.PubAck {
	t.Helper()
	m := nats.NewMsg(transport.XMsgSubject("us", "jp", string(typ)))
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Data = data
	ack, err := p.jp.PublishMsg(p.x.ctx, m, jetstream.WithExpectStream(transport.StreamIn))
	if err != nil {
		t.Fatalf("publish into JP's CMX_IN: %v", err)
	}
	return ack
}

// sent is one receipt JP put in its outbox for US.
type sent struct {
	msgID string // Nats-Msg-Id
	token []byte
}

// outbox lists the receipts in JP's outbox, in order.
func (p *peer) outbox(t *testing.T) []sent {
	t.Helper()
	s, err := p.jp.Stream(p.x.ctx, transport.StreamOut)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(p.x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []sent
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(p.x.ctx, seq)
		if err != nil {
			t.Fatalf("CMX_OUT seq %d: %v", seq, err)
		}
		if raw.Subject == transport.OutRcptSubject("us") {
			out = append(out, sent{msgID: raw.Header.Get(jetstream.MsgIDHeader), token: raw.Data})
		}
	}
	return out
}

// waitReceipt waits until JP has sent a receipt for msg with status and
// reason that attests the envelope digest env, and returns it verified.
func (p *peer) waitReceipt(t *testing.T, msg string, status envelope.Status, reason envelope.Reason, env string) *envelope.VerifiedReceipt {
	t.Helper()
	var found *envelope.VerifiedReceipt
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		for _, s := range p.outbox(t) {
			vr := p.x.with(t).verify(s.token)
			if vr.Msg == msg && vr.Status == status && vr.Reason == reason && vr.EnvSHA256 == env {
				found = vr
				return true
			}
		}
		return false
	}, "JP sends "+string(status)+"/"+string(reason)+" for "+msg)
	return found
}

// jpStatus waits until JP's operators see id in status.
func (p *peer) jpStatus(t *testing.T, id, status string) {
	t.Helper()
	c := p.x.JP.Client("OPS")
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		m, err := c.Message(p.x.ctx, id)
		return err == nil && m.Status == status
	}, "JP records "+id+" as "+status)
}

// quarantined waits until the sender holds token as evidence that did not
// match what it sent: verified, kept, not counted.
func (p *peer) quarantined(t *testing.T, token []byte) {
	t.Helper()
	kv, err := p.us.KeyValue(p.x.ctx, transport.BucketReceipts)
	if err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 15*time.Second, func() bool {
		e, err := kv.Get(p.x.ctx, "quarantine."+envelope.Digest(token))
		return err == nil && bytes.Equal(e.Value(), token)
	}, "the sender quarantines the receipt of a copy it never sent")
}

// flip inverts one bit of the JWE ciphertext, keeping the compact form valid.
func flip(t *testing.T, env []byte) []byte {
	t.Helper()
	parts := strings.Split(string(env), ".")
	ct, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || len(parts) != 5 {
		t.Fatalf("not a compact JWE: %v", err)
	}
	ct[len(ct)/2] ^= 0x01
	parts[3] = base64.RawURLEncoding.EncodeToString(ct)
	return []byte(strings.Join(parts, "."))
}

// noCalls checks that no JP agency was called for id.
func noCalls(t *testing.T, x *exchange, id string) {
	t.Helper()
	for typ, a := range x.jp {
		if n := a.Attempts(id); n != 0 {
			t.Errorf("%s: agency for %s called %d times", id, typ, n)
		}
	}
}

// TestInboundTransport feeds JP's inbound stream with crafted items while
// the leafnode is cut (so the genuine copies wait in the US outbox), then
// heals the link and checks what each side recorded (catalogue §2.4).
func TestInboundTransport(t *testing.T) {
	x := start(t, pair.Options{Proxy: true})
	p := newPeer(x)
	x.Proxy.Cut()
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		return !x.US.Node.LeafConnected() && !x.JP.Node.LeafConnected()
	}, "leafnode down on both sides")
	cases := []struct {
		name   string
		inject func(t *testing.T, p *peer, g *genuine)
		check  func(t *testing.T, p *peer, g *genuine)
	}{
		{name: "N-01_subject_type_differs_from_signed_type", inject: injectMisrouted, check: checkMisrouted},
		{name: "N-02_J-30_same_id_other_envelope", inject: injectConflict, check: checkConflict},
		{name: "N-07_replay_under_new_Nats-Msg-Id", inject: injectReplay, check: checkReplay},
		{name: "N-09_bit_flipped_envelope", inject: injectBitFlip, check: checkBitFlip},
		{name: "garbage_with_valid_Nats-Msg-Id", inject: injectGarbage, check: checkGarbage},
	}
	gs := make([]*genuine, len(cases))
	for i, tc := range cases {
		gs[i] = p.genuine()
		tc.inject(t, p, gs[i])
	}
	x.Proxy.Restore()
	if err := x.WaitLinked(x.ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, &peer{x: x.with(t), jp: p.jp, us: p.us}, gs[i]) })
	}
	x.consumerIdle(p.jp, 10*time.Second)
}

// N-01: the genuine envelope of a labor notice arrives on the subject of
// another type. The signed claims win: rejected/routing_mismatch, signed,
// back at the sender; nothing delivered. The genuine copy that follows with
// the same Nats-Msg-Id changes nothing.
func injectMisrouted(t *testing.T, p *peer, g *genuine) {
	p.publish(t, nonMkt, g.m.ID, g.env)
	p.jpStatus(t, g.m.ID, api.StatusRejected)
}

func checkMisrouted(t *testing.T, p *peer, g *genuine) {
	got := p.x.wait(g.m, api.StatusRejected, 40*time.Second)
	if reason(got) != string(envelope.ReasonRoutingMismatch) {
		t.Errorf("rejected for %q, want routing_mismatch", reason(got))
	}
	rs := p.x.sameReceipts(g.m)
	if statuses(rs) != "rejected" || rs[0].Reason != envelope.ReasonRoutingMismatch || rs[0].EnvSHA256 != envelope.Digest(g.env) {
		t.Errorf("receipts %s (reason %q), want one rejected/routing_mismatch for the envelope sent", statuses(rs), rs[0].Reason)
	}
	noCalls(t, p.x, g.m.ID)
}

// N-02 / J-30: after the genuine message is delivered, another validly
// signed envelope with the same id arrives. Under the same Nats-Msg-Id
// JetStream drops it; under another one the application sees an
// equivocation: a signed rejected/duplicate_conflict for that copy, the first
// delivery untouched, nothing delivered twice.
func injectConflict(t *testing.T, p *peer, g *genuine) {
	p.publish(t, labor, g.m.ID, g.env)
	p.jpStatus(t, g.m.ID, api.StatusDelivered)
	c := g.claims
	c.Marking = "TLP:RED"
	other, err := envelope.Seal(&c, p.signer, p.encryption)
	if err != nil {
		t.Fatal(err)
	}
	if ack := p.publish(t, labor, g.m.ID, other.Envelope); !ack.Duplicate {
		t.Errorf("JetStream stored a second item under Nats-Msg-Id %s", g.m.ID)
	}
	p.publish(t, labor, g.m.ID+".resend.1", other.Envelope)
	vr := p.waitReceipt(t, g.m.ID, envelope.StatusRejected, envelope.ReasonDuplicateConflict, other.EnvSHA256)
	if vr.MsgSHA256 != other.MsgSHA256 {
		t.Errorf("conflict receipt names inner JWS %s, want %s", vr.MsgSHA256, other.MsgSHA256)
	}
	g.token = vr.Token
}

func checkConflict(t *testing.T, p *peer, g *genuine) {
	p.x.wait(g.m, api.StatusDelivered, 40*time.Second)
	effects(t, p.x.jp[labor], g.m.ID, 1)
	rs := p.x.sameReceipts(g.m)
	if statuses(rs) != "accepted,delivered" || rs[1].EnvSHA256 != envelope.Digest(g.env) {
		t.Errorf("receipts %s, want accepted,delivered for the first envelope", statuses(rs))
	}
	if st := p.x.status(g.m); st != api.StatusDelivered {
		t.Errorf("sender status %s after the conflict, want delivered", st)
	}
	p.quarantined(t, g.token)
}

// N-07: the same valid envelope is replayed under a fresh Nats-Msg-Id, as
// after JetStream's dedup window. The application-level claim answers with
// the original receipts, byte for byte, and delivers nothing again.
func injectReplay(t *testing.T, p *peer, g *genuine) {
	p.publish(t, labor, g.m.ID, g.env)
	p.jpStatus(t, g.m.ID, api.StatusDelivered)
	if ack := p.publish(t, labor, envelope.NewID(), g.env); ack.Duplicate {
		t.Fatal("replay under a fresh Nats-Msg-Id was dropped by JetStream; the test would prove nothing")
	}
	transporttest.WaitFor(t, 10*time.Second, func() bool { return len(resent(p.outbox(t), g.m.ID)) == 2 },
		"JP answers the replay with its two stored receipts")
}

// resent returns the receipts re-sent for id (Nats-Msg-Id "<id>.<status>.resend.<seq>").
func resent(out []sent, id string) [][]byte {
	var r [][]byte
	for _, s := range out {
		if strings.HasPrefix(s.msgID, id+".") && strings.Contains(s.msgID, ".resend.") {
			r = append(r, s.token)
		}
	}
	return r
}

func checkReplay(t *testing.T, p *peer, g *genuine) {
	p.x.wait(g.m, api.StatusDelivered, 40*time.Second)
	effects(t, p.x.jp[labor], g.m.ID, 1)
	rs := p.x.sameReceipts(g.m)
	again := resent(p.outbox(t), g.m.ID)
	if statuses(rs) != "accepted,delivered" || len(again) != 2 {
		t.Fatalf("receipts %s, %d re-sent", statuses(rs), len(again))
	}
	for i := range again {
		if !bytes.Equal(again[i], rs[i].Token) {
			t.Errorf("re-sent %s receipt differs from the original bytes", rs[i].Status)
		}
	}
}

// N-09: a copy with one bit flipped in the ciphertext cannot be opened: a
// signed rejected/decrypt_failed receipt bound to that copy's digest goes
// back. It claims nothing: the sender's re-send of the genuine envelope
// (Nats-Msg-Id "<id>.resend.1", F-17) is delivered once; the rejection of the
// corrupt copy reaches the sender as evidence and does not move its status.
func injectBitFlip(t *testing.T, p *peer, g *genuine) {
	bad := flip(t, g.env)
	p.publish(t, labor, g.m.ID, bad)
	vr := p.waitReceipt(t, g.m.ID, envelope.StatusRejected, envelope.ReasonDecryptFailed, envelope.Digest(bad))
	if vr.MsgSHA256 != "" {
		t.Errorf("decrypt_failed receipt names an inner JWS digest")
	}
	g.token = vr.Token
	p.publish(t, labor, g.m.ID+".resend.1", g.env)
	transporttest.WaitFor(t, 10*time.Second, func() bool { return p.x.jp[labor].Effects(g.m.ID) == 1 },
		"the genuine re-send is delivered after the corrupt copy")
}

func checkBitFlip(t *testing.T, p *peer, g *genuine) {
	p.x.wait(g.m, api.StatusDelivered, 40*time.Second)
	effects(t, p.x.jp[labor], g.m.ID, 1)
	rs := p.x.sameReceipts(g.m)
	if statuses(rs) != "accepted,delivered" || rs[0].EnvSHA256 != envelope.Digest(g.env) {
		t.Errorf("receipts %s, want accepted,delivered for the genuine envelope", statuses(rs))
	}
	p.quarantined(t, g.token)
}

// Garbage under a usable Nats-Msg-Id gets a signed rejected/malformed receipt
// naming that id; garbage without one is terminated and kept, as no receipt
// can name it. Neither reaches an agency nor stays pending.
func injectGarbage(t *testing.T, p *peer, g *genuine) {
	id := envelope.NewID()
	junk := []byte("this is not a JWE")
	p.publish(t, labor, id, junk)
	p.waitReceipt(t, id, envelope.StatusRejected, envelope.ReasonMalformed, envelope.Digest(junk))
	p.publish(t, labor, "not-a-message-id", []byte("neither is this"))
	g.token = []byte(id)
	// The genuine message itself goes through untouched once the link heals.
}

func checkGarbage(t *testing.T, p *peer, g *genuine) {
	p.x.wait(g.m, api.StatusDelivered, 40*time.Second)
	effects(t, p.x.jp[labor], g.m.ID, 1)
	id := string(g.token)
	noCalls(t, p.x, id)
	if _, err := p.x.US.Client("OPS").Message(p.x.ctx, id); client.StatusOf(err) != 404 {
		t.Errorf("sender knows the garbage's id %s: %v", id, err)
	}
}
