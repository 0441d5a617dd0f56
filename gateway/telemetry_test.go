package gateway_test

// Observability end to end (STYLE.md "Logging and telemetry"): two real
// gateways export their spans to memory; one trace must follow each message
// from ingress at the sender to the receipts verified back at the sender,
// stop at the border when a side says so, and never carry message content.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery/agencytest"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/telemetry"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// telStack is a running pair whose gateways export spans to memory. JP's
// agencies are all webhooks (agencytest); US's TREAS-CFIUS is a pull agency.
type telStack struct {
	*pair.Pair
	t     *testing.T
	ctx   context.Context
	spans map[string]*tracetest.InMemoryExporter
	tel   map[string]*telemetry.Providers
	jp    map[envelope.Type]*agencytest.Agency
}

type telOptions struct {
	tune   func(*gateway.Config)
	logger *slog.Logger
	proxy  bool
}

func startTel(t *testing.T, o telOptions) *telStack {
	t.Helper()
	x := &telStack{t: t, ctx: t.Context(), spans: map[string]*tracetest.InMemoryExporter{},
		tel: map[string]*telemetry.Providers{}, jp: map[envelope.Type]*agencytest.Agency{}}
	for _, party := range []string{"US", "JP"} {
		x.spans[party] = tracetest.NewInMemoryExporter()
		p, err := telemetry.Setup(x.ctx, telemetry.Options{ServiceName: "cmxd-" + strings.ToLower(party), Spans: x.spans[party]})
		if err != nil {
			t.Fatal(err)
		}
		x.tel[party] = p
		// Registered first, so it runs after the pair has stopped.
		t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	}
	webhooks := map[string]string{}
	for _, typ := range envelope.Types {
		x.jp[typ] = agencytest.New(t)
		webhooks["JP:"+pair.AgencyFor("JP", typ)] = x.jp[typ].URL()
	}
	p, err := pair.Start(x.ctx, pair.Options{Dir: t.TempDir(), Telemetry: x.tel, Webhooks: webhooks,
		Tune: o.tune, Logger: o.logger, Proxy: o.proxy})
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	x.Pair = p
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("pair stop: %v", err)
		}
	})
	return x
}

// with returns x reporting to t (a subtest).
func (x *telStack) with(t *testing.T) *telStack {
	c := *x
	c.t = t
	return &c
}

// sendAndWait submits the example message of typ from party and waits until
// the sender records it delivered.
func (x *telStack) sendAndWait(from string, typ envelope.Type) *pair.Sent {
	x.t.Helper()
	m, err := x.Send(x.ctx, from, typ, "")
	if err != nil {
		x.t.Fatal(err)
	}
	x.waitStatus(m, api.StatusDelivered)
	return m
}

func (x *telStack) waitStatus(m *pair.Sent, want string) *api.Message {
	x.t.Helper()
	got, err := x.WaitStatus(x.ctx, m, want, 20*time.Second)
	if err != nil {
		x.t.Fatalf("%s %s: %v", m.Type, m.ID, err)
	}
	if got.Status != want {
		x.t.Fatalf("%s %s: status %s, want %s; timeline %+v", m.Type, m.ID, got.Status, want, got.Timeline)
	}
	return got
}

// span is one exported span and the party whose gateway exported it.
type span struct {
	party string
	tracetest.SpanStub
}

func (s span) attr(k attribute.Key) string {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value.String()
		}
	}
	return ""
}

func (s span) String() string {
	return fmt.Sprintf("%s %s %q span=%s parent=%s", s.party, s.SpanKind, s.Name, s.SpanContext.SpanID(), s.Parent.SpanID())
}

// all flushes both gateways' providers and returns every span ended so far.
func (x *telStack) all() []span {
	x.t.Helper()
	var out []span
	for _, party := range []string{"US", "JP"} {
		if err := x.tel[party].ForceFlush(x.ctx); err != nil {
			x.t.Fatal(err)
		}
		for _, s := range x.spans[party].GetSpans() {
			out = append(out, span{party, s})
		}
	}
	return out
}

// ingressTrace is the trace of message id's SERVER span at party.
func ingressTrace(spans []span, party, id string) trace.TraceID {
	for _, s := range spans {
		if s.party == party && s.SpanKind == trace.SpanKindServer && s.attr(semconv.MessagingMessageIDKey) == id {
			return s.SpanContext.TraceID()
		}
	}
	return trace.TraceID{}
}

func inTrace(spans []span, id trace.TraceID) []span {
	var out []span
	for _, s := range spans {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

// hop is one expected span of a message's trace: n spans of that kind and
// name at party, each a child of a span named parent at pParty (remote: the
// parent's context came through NATS headers or the ledger; either: some
// of the n did, some not).
type hop struct {
	party  string
	kind   trace.SpanKind
	name   string
	n      int
	parent string
	pParty string
	remote bool
	either bool
}

// wantTrace lists the spans of one message from → to (DESIGN.md §3): ingress,
// seal, outbox, relay, process, open, delivery (webhook CLIENT span unless
// the agency pulls), two receipts back, verified at the sender.
func wantTrace(from, to string, typ envelope.Type, webhook bool) []hop {
	f, t := strings.ToLower(from), strings.ToLower(to)
	sendOut, fwd := "send cmx.out."+t+".msg."+string(typ), "send cmx.x."+f+"."+t+".msg."+string(typ)
	process := "process cmx.x." + f + "." + t + ".msg." + string(typ)
	rcptOut, rcptFwd, rcptIn := "send cmx.out."+f+".rcpt", "send cmx.x."+t+"."+f+".rcpt", "process cmx.x."+t+"."+f+".rcpt"
	const in, srv, prod, cons = trace.SpanKindInternal, trace.SpanKindServer, trace.SpanKindProducer, trace.SpanKindConsumer
	hops := []hop{
		{party: from, kind: srv, name: "POST /v1/messages", n: 1},
		{party: from, kind: in, name: "seal", n: 1, parent: "POST /v1/messages", pParty: from},
		{party: from, kind: prod, name: sendOut, n: 1, parent: "POST /v1/messages", pParty: from},
		{party: from, kind: prod, name: fwd, n: 1, parent: sendOut, pParty: from, remote: true},
		{party: to, kind: cons, name: process, n: 1, parent: fwd, pParty: from, remote: true},
		{party: to, kind: in, name: "open", n: 1, parent: process, pParty: to},
		// A pull agency's ack issues the delivered receipt under the process
		// span's context kept in the ledger.
		{party: to, kind: in, name: "receipt issue", n: 2, parent: process, pParty: to, either: !webhook},
		{party: to, kind: prod, name: rcptOut, n: 2, parent: "receipt issue", pParty: to},
		{party: to, kind: prod, name: rcptFwd, n: 2, parent: rcptOut, pParty: to, remote: true},
		{party: from, kind: cons, name: rcptIn, n: 2, parent: rcptFwd, pParty: to, remote: true},
		{party: from, kind: in, name: "receipt verify", n: 2, parent: rcptIn, pParty: from},
	}
	if webhook {
		hops = append(hops, hop{party: to, kind: trace.SpanKindClient, name: "POST", n: 1, parent: process, pParty: to})
	}
	return hops
}

// missing describes what trace lacks against want ("" when complete).
func missing(tr []span, want []hop) string {
	var out []string
	for _, h := range want {
		got := 0
		for _, s := range tr {
			if s.party == h.party && s.Name == h.name && s.SpanKind == h.kind {
				got++
			}
		}
		if got != h.n {
			out = append(out, fmt.Sprintf("%d× %s %s %q (got %d)", h.n, h.party, h.kind, h.name, got))
		}
	}
	return strings.Join(out, "; ")
}

// waitTrace waits until the trace of message m (found by its SERVER span at
// the sender) holds every expected span, and returns it.
func (x *telStack) waitTrace(m *pair.Sent, want []hop) []span {
	x.t.Helper()
	var tr []span
	var gap string
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans := x.all()
		tr = inTrace(spans, ingressTrace(spans, m.From, m.ID))
		if gap = missing(tr, want); gap == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	if gap != "" {
		x.t.Fatalf("%s %s: trace incomplete: want %s\ntrace: %v", m.Type, m.ID, gap, tr)
	}
	return tr
}

// checkParents checks each expected span's parent in the trace.
func checkParents(t *testing.T, tr []span, want []hop) {
	t.Helper()
	for _, h := range want {
		for _, s := range tr {
			if s.party != h.party || s.Name != h.name {
				continue
			}
			if h.parent == "" {
				if s.Parent.IsValid() {
					t.Errorf("%v: want a root span", s)
				}
				continue
			}
			i := slices.IndexFunc(tr, func(p span) bool {
				return p.party == h.pParty && p.Name == h.parent && p.SpanContext.SpanID() == s.Parent.SpanID()
			})
			if i < 0 {
				t.Errorf("%v: parent is not %s %q", s, h.pParty, h.parent)
			}
			if s.Parent.IsRemote() != h.remote && !h.either {
				t.Errorf("%v: parent remote=%v, want %v", s, s.Parent.IsRemote(), h.remote)
			}
		}
	}
}

// checkAttributes checks the semantic-convention attributes of a message's
// spans: messaging.* on every NATS hop, the message id on every cmx span,
// the type where it is known.
func checkAttributes(t *testing.T, tr []span, id string, typ envelope.Type) {
	t.Helper()
	for _, s := range tr {
		verb, subject, messaging := strings.Cut(s.Name, " ")
		messaging = messaging && (verb == "send" || verb == "process")
		msgID := s.attr(semconv.MessagingMessageIDKey)
		switch {
		case messaging:
			if s.attr(semconv.MessagingSystemKey) != "nats" || s.attr(semconv.MessagingDestinationNameKey) != subject ||
				s.attr(semconv.MessagingOperationTypeKey) != verb {
				t.Errorf("%v: messaging attributes %v", s, s.Attributes)
			}
			if want := strings.HasSuffix(subject, ".rcpt"); msgID != id && !(want && strings.HasPrefix(msgID, id+".")) {
				t.Errorf("%v: messaging.message.id %q, want %s (or %s.<status> for a receipt)", s, msgID, id, id)
			}
		case s.SpanKind == trace.SpanKindClient:
			if s.attr("url.full") == "" {
				t.Errorf("%v: no url.full", s)
			}
		default: // SERVER, seal, open, receipt issue, receipt verify
			if msgID != id {
				t.Errorf("%v: messaging.message.id %q, want %s", s, msgID, id)
			}
		}
		if s.Name == "seal" || s.Name == "open" || strings.Contains(s.Name, ".msg.") {
			if got := s.attr(transport.AttrMessageType); got != string(typ) {
				t.Errorf("%v: %s = %q, want %s", s, transport.AttrMessageType, got, typ)
			}
		}
		if s.Name == "receipt issue" || s.Name == "receipt verify" {
			if st := s.attr(transport.AttrStatus); st != "accepted" && st != "delivered" {
				t.Errorf("%v: %s = %q", s, transport.AttrStatus, st)
			}
		}
		if want := "cmxd-" + strings.ToLower(s.party); !slices.Contains(s.Resource.Attributes(), semconv.ServiceName(want)) {
			t.Errorf("%v: resource %v, want service.name %s", s, s.Resource.Attributes(), want)
		}
	}
}

// contentStrings are distinctive strings of every example body: every
// string value of 12 characters or more.
func contentStrings(t *testing.T) []string {
	t.Helper()
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(v) >= 12 {
				out = append(out, v)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	for _, typ := range envelope.Types {
		var body any
		if err := json.Unmarshal(envelope.Example(typ), &body); err != nil {
			t.Fatal(err)
		}
		walk(body)
	}
	if len(out) < 30 {
		t.Fatalf("only %d distinctive strings in the example bodies", len(out))
	}
	return out
}

// checkNoContent fails if any name, attribute, event, link or status of any
// span holds a piece of message content.
func checkNoContent(t *testing.T, spans []span) {
	t.Helper()
	content := contentStrings(t)
	for _, s := range spans {
		values := []string{s.Name, s.Status.Description}
		kvs := slices.Concat(s.Attributes, s.Resource.Attributes())
		for _, e := range s.Events {
			values = append(values, e.Name)
			kvs = append(kvs, e.Attributes...)
		}
		for _, l := range s.Links {
			kvs = append(kvs, l.Attributes...)
		}
		for _, kv := range kvs {
			values = append(values, string(kv.Key), kv.Value.String())
		}
		for _, v := range values {
			for _, c := range content {
				if strings.Contains(v, c) {
					t.Errorf("%v carries message content %.40q", s, c)
				}
			}
		}
	}
}

func TestTraceFollowsEachMessageAcrossBothGateways(t *testing.T) {
	x := startTel(t, telOptions{})
	type msg struct {
		*pair.Sent
		webhook bool
	}
	var sent []msg
	for _, typ := range envelope.Types {
		sent = append(sent, msg{x.sendAndWait("US", typ), true})
	}
	// The reverse direction to a pull agency: the delivered receipt is issued
	// when the agency acks, and must still continue the message's trace.
	sent = append(sent, msg{x.sendAndWait("JP", envelope.InvestmentReviewBestPractice), false})

	traces := map[trace.TraceID]string{}
	for _, m := range sent {
		t.Run(m.From+"_"+string(m.Type), func(t *testing.T) {
			x := x.with(t)
			want := wantTrace(m.From, m.To, m.Type, m.webhook)
			tr := x.waitTrace(m.Sent, want)
			if n := total(want); len(tr) != n {
				t.Errorf("trace has %d spans, want %d: %v", len(tr), n, tr)
			}
			id := tr[0].SpanContext.TraceID()
			if other, dup := traces[id]; dup {
				t.Errorf("messages %s and %s share trace %s", other, m.ID, id)
			}
			traces[id] = m.ID
			checkParents(t, tr, want)
			checkAttributes(t, tr, m.ID, m.Type)
			if m.webhook {
				checkWebhookTraceparent(t, tr, x.jp[m.Type].Headers(m.ID))
			}
			x.checkHeaderCarried(m.Sent, id)
		})
	}
	checkNoContent(t, x.all())
}

// total is the number of spans the trace holds.
func total(want []hop) int {
	n := 0
	for _, h := range want {
		n += h.n
	}
	return n
}

// checkWebhookTraceparent: the agency received the CLIENT span's context.
func checkWebhookTraceparent(t *testing.T, tr []span, h map[string][]string) {
	t.Helper()
	i := slices.IndexFunc(tr, func(s span) bool { return s.SpanKind == trace.SpanKindClient })
	if i < 0 {
		t.Fatal("no CLIENT span")
	}
	sc := tr[i].SpanContext
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got := h["Traceparent"]; !slices.Equal(got, []string{want}) {
		t.Errorf("webhook Traceparent %q, want %q (the CLIENT span)", got, want)
	}
}

// checkHeaderCarried: the envelope stored in the receiver's CMX_IN carries
// the trace context under the lower-case key the propagator reads.
func (x *telStack) checkHeaderCarried(m *pair.Sent, id trace.TraceID) {
	x.t.Helper()
	hdr := x.inboundHeader(m)
	if got := hdr.Get("traceparent"); !strings.HasPrefix(got, "00-"+id.String()+"-") {
		x.t.Errorf("CMX_IN header traceparent %q, want trace %s", got, id)
	}
	if _, ok := hdr["Traceparent"]; ok {
		x.t.Errorf("CMX_IN header has a canonicalised Traceparent key: %v", hdr)
	}
}

// inboundHeader reads the NATS header of m's envelope in the receiver's CMX_IN.
func (x *telStack) inboundHeader(m *pair.Sent) nats.Header {
	x.t.Helper()
	url, user, pass := x.Side(m.To).Node.NATS()
	nc, err := transport.Connect(x.ctx, url, user, pass)
	if err != nil {
		x.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		x.t.Fatal(err)
	}
	s, err := js.Stream(x.ctx, transport.StreamIn)
	if err != nil {
		x.t.Fatal(err)
	}
	subject := transport.XMsgSubject(strings.ToLower(m.From), strings.ToLower(m.To), string(m.Type))
	raw, err := s.GetLastMsgForSubject(x.ctx, subject)
	if err != nil {
		x.t.Fatalf("CMX_IN %s: %v", subject, err)
	}
	if got := raw.Header.Get(jetstream.MsgIDHeader); got != m.ID {
		x.t.Fatalf("last message on %s is %s, want %s", subject, got, m.ID)
	}
	return raw.Header
}

func TestTraceContextStopsAtBorder(t *testing.T) {
	x := startTel(t, telOptions{tune: func(c *gateway.Config) { c.Peer.TraceContext = "stop" }})
	m := x.sendAndWait("US", envelope.LaborEnforcementNotice)
	if hdr := x.inboundHeader(m); hdr.Get("traceparent") != "" || hdr.Get("tracestate") != "" {
		t.Errorf("trace context crossed the border: %v", hdr)
	}
	var spans []span
	var usTrace trace.TraceID
	var jpProcess, usVerify []span
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		spans = x.all()
		usTrace = ingressTrace(spans, "US", m.ID)
		jpProcess = pick(spans, "JP", "process cmx.x.us.jp.msg.labor_enforcement_notice", m.ID)
		usVerify = pick(spans, "US", "receipt verify", m.ID)
		return usTrace.IsValid() && len(jpProcess) == 1 && len(usVerify) == 2 &&
			len(pick(spans, "US", "process cmx.x.jp.us.rcpt", "")) == 2
	}, "the message's spans at both sides, found by message id")

	// JP continues nothing of ours: its process span is a root of a JP trace.
	p := jpProcess[0]
	if p.SpanContext.TraceID() == usTrace || p.Parent.IsValid() || len(p.Links) > 0 {
		t.Errorf("JP process span: trace %s (US %s), parent %v, links %v", p.SpanContext.TraceID(), usTrace, p.Parent, p.Links)
	}
	jpTraces := map[trace.TraceID]bool{}
	for _, s := range spans {
		if s.party == "JP" {
			jpTraces[s.SpanContext.TraceID()] = true
			checkNothingFrom(t, s, usTrace)
		}
	}
	// and ours continue nothing of JP's, nor link to it.
	for _, s := range spans {
		if s.party != "US" {
			continue
		}
		if jpTraces[s.SpanContext.TraceID()] || (s.Parent.IsRemote() && jpTraces[s.Parent.TraceID()]) {
			t.Errorf("%v is in JP's trace %s", s, s.SpanContext.TraceID())
		}
		for _, l := range s.Links {
			if jpTraces[l.SpanContext.TraceID()] {
				t.Errorf("%v links to JP's trace %s", s, l.SpanContext.TraceID())
			}
		}
	}
	// The receipts start US traces of their own, linked to the message's.
	for _, v := range usVerify {
		if v.SpanContext.TraceID() == usTrace || len(v.Links) != 1 || v.Links[0].SpanContext.TraceID() != usTrace {
			t.Errorf("%v: trace %s, links %v; want its own US trace linked to %s", v, v.SpanContext.TraceID(), v.Links, usTrace)
		}
	}
	if got := x.jp[m.Type].Headers(m.ID)["Traceparent"]; len(got) != 1 || !strings.Contains(got[0], p.SpanContext.TraceID().String()) {
		t.Errorf("JP's agency got Traceparent %q, want JP's trace %s", got, p.SpanContext.TraceID())
	}
}

// pick returns party's spans named name whose message id is id (any id if "").
func pick(spans []span, party, name, id string) []span {
	var out []span
	for _, s := range spans {
		if s.party == party && s.Name == name && (id == "" || s.attr(semconv.MessagingMessageIDKey) == id) {
			out = append(out, s)
		}
	}
	return out
}

func checkNothingFrom(t *testing.T, s span, foreign trace.TraceID) {
	t.Helper()
	if s.SpanContext.TraceID() == foreign || s.Parent.TraceID() == foreign {
		t.Errorf("%v continues the foreign trace %s", s, foreign)
	}
	for _, l := range s.Links {
		if l.SpanContext.TraceID() == foreign {
			t.Errorf("%v links to the foreign trace %s", s, foreign)
		}
	}
}

// lines decodes the JSON log lines written so far.
func (s *logBuf) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(s.b.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

func TestLogsCarryTraceAndSpanIDs(t *testing.T) {
	var buf logBuf
	x := startTel(t, telOptions{logger: gateway.NewLogger(gateway.LogConfig{Format: "json"}, &buf)})
	m := x.sendAndWait("US", envelope.NonMarketPracticeReport)
	tr := x.waitTrace(m, wantTrace("US", "JP", m.Type, true))
	traceID := tr[0].SpanContext.TraceID().String()
	if st, err := x.US.Client(m.Agency).Message(x.ctx, m.ID); err != nil || st.TraceID != traceID {
		t.Errorf("GET /v1/messages/%s: trace_id %q (%v), want %s", m.ID, st.TraceID, err, traceID)
	}
	spanIDs := map[string]string{} // span id → party
	for _, s := range tr {
		spanIDs[s.SpanContext.SpanID().String()] = s.party
	}
	perParty := map[string][]string{}
	for _, l := range buf.lines(t) {
		if l["trace_id"] != traceID {
			continue
		}
		party, _ := l["party"].(string)
		sid, _ := l["span_id"].(string)
		if spanIDs[sid] != party {
			t.Errorf("%s log line %q: span_id %q is not a span of %s in the message's trace", party, l["msg"], sid, party)
		}
		perParty[party] = append(perParty[party], fmt.Sprint(l["msg"]))
	}
	for _, party := range []string{"US", "JP"} {
		if len(perParty[party]) == 0 {
			t.Errorf("no %s log line carries the message's trace id %s", party, traceID)
		}
	}
	t.Logf("log lines in the message's trace: %v", perParty)
}
