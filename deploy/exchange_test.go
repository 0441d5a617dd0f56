package deploy_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// TestTwoGovernments runs the deployment as written: both parties' PKI from
// "cmx pki init", only public files exchanged, two nats-servers from
// deploy/us and deploy/jp, two cmxd processes from the committed cmxd.yaml.
// It exchanges every type both ways, then restarts JP's NATS server and
// US's cmxd with messages in flight, and checks that every message ends
// delivered, exactly once, at the right agency.
func TestTwoGovernments(t *testing.T) {
	cmxdBin, cmxBin := binaries(t)
	root := copyDeploy(t)
	passwords := map[string]string{"US": rand.Text(), "JP": rand.Text()}
	makeTrialPKI(t, cmxBin, filepath.Join(root, dirUS), "US")
	makeTrialPKI(t, cmxBin, filepath.Join(root, dirJP), "JP")
	exchangePublicFiles(t, root)

	usNATS, jpNATS := bootNATS(t, root, passwords, nil)
	jp := startGateway(t, cmxdBin, filepath.Join(root, dirJP), "JP", jpNATS.clientURL(), passwords["JP"])
	us := startGateway(t, cmxdBin, filepath.Join(root, dirUS), "US", usNATS.clientURL(), passwords["US"])
	x := &exchange{gw: map[string]*gatewayProc{"US": us, "JP": jp}, pulled: map[string]int{}}

	t.Run("all_types_both_ways", func(t *testing.T) {
		for _, from := range []string{"US", "JP"} {
			x.sendAll(t, from)
		}
		x.waitDelivered(t, 60*time.Second)
	})
	t.Run("restart_jp_nats_and_us_cmxd", func(t *testing.T) {
		jpNATS.stop(t)
		x.sendAll(t, "US") // accepted by US while JP's server is down
		jpNATS.start(t)
		waitLeaf(t, 1, usNATS, jpNATS)
		jp.waitReady(t)
		x.sendAll(t, "US")
		x.sendAll(t, "JP")
		us.stop(t)         // SIGTERM with these still in the pipeline
		x.sendAll(t, "JP") // while US's gateway is down: stored in US's CMX_IN
		us.start(t)
		x.waitDelivered(t, 90*time.Second)
	})
	t.Run("nothing_lost_nothing_twice", x.checkDeliveries)
	t.Run("operators_view", func(t *testing.T) {
		for _, g := range []*gatewayProc{us, jp} {
			checkPeers(t, g)
		}
		for _, n := range []*natsServer{usNATS, jpNATS} {
			checkMonitoring(t, n)
		}
	})
}

// makeTrialPKI runs what "make deploy-pki" runs for one side, and issues a
// client certificate for each agency of its cmxd.yaml (cmx pki agency).
func makeTrialPKI(t *testing.T, cmx, dir, party string) {
	t.Helper()
	pki := filepath.Join(dir, "pki")
	run(t, cmx, "pki", "init", "--party", party, "--out", pki)
	for _, a := range loadConfig(t, filepath.Join(dir, "cmxd.yaml")).Agencies {
		run(t, cmx, "pki", "agency", "--ca", pki, "--agency", a.ID, "--out", filepath.Join(dir, "agencies", a.ID))
	}
}

// sentMsg is one submitted message.
type sentMsg struct {
	id, from, to, agency, recipient string
	typ                             envelope.Type
}

// exchange tracks what was sent and what pull agencies took.
type exchange struct {
	gw     map[string]*gatewayProc
	sent   []sentMsg
	done   map[string]bool // delivered receipts seen at the sender
	pulled map[string]int  // message id → times a pull agency got it
}

// sendAll submits one message of each type from party's agency for it.
func (x *exchange) sendAll(t *testing.T, from string) {
	t.Helper()
	to := peerOf(from)
	for _, typ := range envelope.Types {
		agency := agencyFor(t, x.gw[from], typ, true)
		req := &api.SubmitRequest{Type: string(typ), To: to, Body: envelope.Example(typ)}
		resp, err := x.gw[from].client(agency).Submit(testCtx(t), req, "")
		if err != nil {
			t.Fatalf("%s %s submits %s: %v", from, agency, typ, err)
		}
		if resp.Status != api.StatusAccepted {
			t.Fatalf("202 with status %q", resp.Status)
		}
		x.sent = append(x.sent, sentMsg{id: resp.ID, from: from, to: to, agency: agency,
			recipient: agencyFor(t, x.gw[to], typ, false), typ: typ})
	}
}

func peerOf(party string) string {
	if party == "US" {
		return "JP"
	}
	return "US"
}

// agencyFor is the first agency of g's config that sends (or receives) typ.
func agencyFor(t *testing.T, g *gatewayProc, typ envelope.Type, send bool) string {
	t.Helper()
	for _, a := range g.cfg.Agencies {
		if (send && slices.Contains(a.Send, string(typ))) || (!send && slices.Contains(a.Receive, string(typ))) {
			return a.ID
		}
	}
	t.Fatalf("%s has no agency for %s", g.party, typ)
	return ""
}

// waitDelivered drains the pull inboxes as a pull agency would and polls
// each sender until every message has its delivered receipt.
func (x *exchange) waitDelivered(t *testing.T, timeout time.Duration) {
	t.Helper()
	if x.done == nil {
		x.done = map[string]bool{}
	}
	var pending []string
	ok := waitUntil(timeout, func() bool {
		x.drainInboxes(t)
		pending = pending[:0]
		for _, m := range x.sent {
			if !x.done[m.id] && !x.delivered(t, m) {
				pending = append(pending, fmt.Sprintf("%s→%s %s %s", m.from, m.to, m.typ, m.id))
			}
		}
		return len(pending) == 0
	})
	if !ok {
		t.Fatalf("not delivered after %v: %q\nUS:\n%s\nJP:\n%s", timeout, pending, x.gw["US"].logs(), x.gw["JP"].logs())
	}
}

// delivered asks the sender for m's status; a terminal status other than
// delivered fails the test.
func (x *exchange) delivered(t *testing.T, m sentMsg) bool {
	t.Helper()
	ctx, cancel := reqCtx()
	defer cancel()
	got, err := x.gw[m.from].client(m.agency).Message(ctx, m.id)
	if err != nil {
		return false // e.g. the gateway is restarting
	}
	switch got.Status {
	case api.StatusDelivered:
		x.done[m.id] = true
		return true
	case api.StatusRejected, api.StatusFailed:
		t.Fatalf("%s→%s %s %s ended %s: %+v", m.from, m.to, m.typ, m.id, got.Status, got.Timeline)
	}
	return false
}

// drainInboxes acks everything waiting for the pull agencies (no webhook).
func (x *exchange) drainInboxes(t *testing.T) {
	t.Helper()
	for _, g := range x.gw {
		for _, a := range g.cfg.Agencies {
			if a.Webhook != "" || len(a.Receive) == 0 {
				continue
			}
			x.drainInbox(g, a.ID)
		}
	}
}

func (x *exchange) drainInbox(g *gatewayProc, agency string) {
	ctx, cancel := reqCtx()
	defer cancel()
	c := g.client(agency)
	items, err := c.Inbox(ctx, 100)
	if err != nil {
		return // e.g. the gateway is restarting; the next poll drains it
	}
	for _, d := range items {
		if err := c.Ack(ctx, d.ID); err == nil {
			x.pulled[d.ID]++
		}
	}
}

// checkDeliveries: every message reached its recipient agency, and no
// agency recorded a message twice or one that was never sent.
func (x *exchange) checkDeliveries(t *testing.T) {
	want := map[string]int{} // "JP:METI" → messages for it
	for _, m := range x.sent {
		g := x.gw[m.to]
		want[m.to+":"+m.recipient]++
		if hook, ok := g.hooks[m.recipient]; ok {
			if _, _, ok := hook.Delivery(m.id); !ok {
				t.Errorf("%s %s not delivered to the webhook of %s", m.typ, m.id, m.recipient)
			}
		} else if x.pulled[m.id] != 1 {
			t.Errorf("%s %s pulled %d times by %s, want once", m.typ, m.id, x.pulled[m.id], m.recipient)
		}
	}
	pulls := 0
	for party, g := range x.gw {
		for id, hook := range g.hooks {
			if got := hook.Count(); got != want[party+":"+id] {
				t.Errorf("%s:%s recorded %d distinct deliveries, want %d", party, id, got, want[party+":"+id])
			}
		}
		for _, a := range g.cfg.Agencies {
			if _, hook := g.hooks[a.ID]; !hook {
				pulls += want[party+":"+a.ID]
			}
		}
	}
	if len(x.pulled) != pulls {
		t.Errorf("pull agencies took %d distinct messages, want %d", len(x.pulled), pulls)
	}
	t.Logf("%d messages, all delivered once", len(x.sent))
}

// checkPeers: the operators' view of the link (GET /v1/peers, admin agency
// OPS) settles at link up and no backlog.
func checkPeers(t *testing.T, g *gatewayProc) {
	t.Helper()
	var last []api.PeerStatus
	ok := waitUntil(30*time.Second, func() bool {
		ctx, cancel := reqCtx()
		defer cancel()
		var err error
		last, err = g.client("OPS").Peers(ctx)
		return err == nil && len(last) == 1 && last[0].Link == "up" && last[0].Backlog == 0
	})
	if !ok {
		t.Errorf("%s /v1/peers = %+v, want link up and no backlog", g.party, last)
	}
}

// checkMonitoring: the NATS monitoring endpoint answers, on loopback only.
func checkMonitoring(t *testing.T, n *natsServer) {
	t.Helper()
	addr := n.srv.MonitorAddr()
	if addr == nil || !addr.IP.IsLoopback() {
		t.Fatalf("%s monitoring listens on %v, want loopback", n.name, addr)
	}
	url := "http://" + net.JoinHostPort(addr.IP.String(), fmt.Sprint(addr.Port)) + "/healthz?js-enabled-only=true"
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, url, nil)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", n.name, url, resp.Status)
	}
}

// testCtx is bounded well below the package's time budget.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := reqCtx()
	t.Cleanup(cancel)
	return ctx
}

// reqCtx bounds one request inside a polling loop.
func reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}
