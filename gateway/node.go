package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/delivery"
	"github.com/cmx-exchange/cmx/gateway/inbound"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/outbound"
	"github.com/cmx-exchange/cmx/gateway/receipts"
	"github.com/cmx-exchange/cmx/gateway/telemetry"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// Node is one running gateway: NATS (embedded or external), the pipeline
// stages and the HTTP API. Create it with New, run it with Run.
type Node struct {
	cfg    *Config
	keys   *keys
	logger *slog.Logger
	now    func() time.Time

	started  chan struct{}
	mu       sync.Mutex
	httpAddr net.Addr
	embedded *transport.Embedded
	// NATS connection of the gateway, set when Run has started NATS
	natsURL, natsUser, natsPass string

	// set up by Run
	js         jetstream.JetStream
	sent       *ledger.Store
	seen       *ledger.Store
	rcpts      *ledger.Receipts
	sender     *outbound.Sender
	forwarder  *outbound.Forwarder
	reconciler *outbound.Reconciler
	issuer     *receipts.Issuer
	inbox      *delivery.Inbox
	dir        *directory
	statusKV   jetstream.KeyValue
	opener     *envelope.Opener
	relayed    *outbound.Relayed // relayed events held for the receipts' writes
	recent     *ledger.Recent    // outbound records written last, with their revisions

	tel     *telemetry.Providers
	ownTel  bool // created by New: shut down by Run
	metrics *instruments
	gauges  metric.Registration // scrape-time gauges of this run; unregistered when Run ends (the providers may outlive the node)
	// lastReceipt is when a receipt of the peer was last accepted (unix
	// nanoseconds; 0 = none since start), for GET /v1/peers.
	lastReceipt atomic.Int64
}

// Option configures optional behaviour of New.
type Option func(*Node) error

// WithLogger sets the logger (default: JSON to stderr at the configured level).
func WithLogger(l *slog.Logger) Option { return func(n *Node) error { n.logger = l; return nil } }

// WithTelemetry sets the tracer and meter providers (default: built from
// the OTEL_* environment with service.name cmxd-<party>).
func WithTelemetry(p *telemetry.Providers) Option {
	return func(n *Node) error { n.tel = p; return nil }
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(n *Node) error { n.now = now; return nil } }

// New loads and checks everything the config names. It starts nothing.
func New(cfg *Config, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, now: time.Now, started: make(chan struct{}), dir: newDirectory(cfg)}
	for _, o := range opts {
		if err := o(n); err != nil {
			return nil, err
		}
	}
	if n.logger == nil {
		n.logger = NewLogger(cfg.Log, nil)
	}
	if n.tel == nil {
		tel, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: "cmxd-" + strings.ToLower(cfg.Party),
			Attributes: map[string]string{string(transport.AttrParty): cfg.Party}})
		if err != nil {
			return nil, fmt.Errorf("gateway: telemetry: %w", err)
		}
		n.tel, n.ownTel = tel, true
	}
	in, err := newInstruments(n.tel.Meter)
	if err != nil {
		return nil, err
	}
	n.metrics = in
	k, err := loadKeys(cfg, n.now())
	if err != nil {
		return nil, err
	}
	n.keys = k
	return n, nil
}

// Started is closed once the HTTP API listens and the pipeline runs.
func (n *Node) Started() <-chan struct{} { return n.started }

// HTTPAddr is the address the HTTP API listens on (after Started).
func (n *Node) HTTPAddr() net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.httpAddr
}

// LeafURL is the embedded server's leafnode listener URL, "" if none (after Started).
func (n *Node) LeafURL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.embedded == nil {
		return ""
	}
	return n.embedded.LeafURL()
}

// NATS returns the URL and credentials the gateway connects to NATS with
// (after Started): the configured external server's, or the embedded
// server's with its per-process password. It grants what the gateway itself
// may do in account XCHG; for operators' tools and tests that inspect or
// feed the streams of a running node.
func (n *Node) NATS() (url, user, password string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.natsURL, n.natsUser, n.natsPass
}

// Run runs the gateway until ctx ends, then shuts down in pipeline order:
// stop HTTP intake, stop the consumers and forwarder, drain NATS, stop the
// embedded server.
func (n *Node) Run(ctx context.Context) error {
	url, user, pass, err := n.startNATS()
	if err != nil {
		return err
	}
	defer n.stopNATS()
	if n.ownTel {
		defer func() { _ = n.tel.Shutdown(context.WithoutCancel(ctx)) }()
	}
	n.mu.Lock()
	n.natsURL, n.natsUser, n.natsPass = url, user, pass
	n.mu.Unlock()
	// To the embedded server the gateway connects in process (no loopback
	// TCP): fewer syscalls and wake-ups per JetStream request, which a
	// steady load pays one by one (about 7 % of the gateways' CPU at
	// 200 msg/s in cmx bench).
	var inproc []nats.Option
	if n.embedded != nil {
		inproc = append(inproc, nats.InProcessServer(n.embedded.Server()))
	}
	nc, err := transport.Connect(ctx, url, user, pass, append(inproc, nats.Name("cmxd-"+strings.ToLower(n.cfg.Party)))...)
	if err != nil {
		return fmt.Errorf("gateway: connect to NATS: %w", err)
	}
	defer nc.Close()
	bc, err := transport.ConnectBorder(ctx, url, user, pass, append(inproc, nats.Name("cmxd-"+strings.ToLower(n.cfg.Party)+"-border"))...)
	if err != nil {
		return fmt.Errorf("gateway: connect to NATS (border): %w", err)
	}
	defer bc.Close()
	if err := n.setup(ctx, nc, bc); err != nil {
		return err
	}
	defer func() { _ = n.gauges.Unregister() }()
	return n.serve(ctx, nc)
}

func (n *Node) startNATS() (url, user, pass string, err error) {
	if n.cfg.NATS.URL != "" {
		return n.cfg.NATS.URL, n.cfg.NATS.User, n.cfg.NATS.Password, nil
	}
	e := n.cfg.NATS.Embedded
	pass = rand.Text() // the embedded server serves this process only
	ec := transport.EmbeddedConfig{
		Party: n.cfg.Party, Peer: n.cfg.Peer.Party, StoreDir: n.cfg.Path(e.StoreDir), Port: e.Port,
		GatewayUser: "gw", GatewayPassword: pass, MaxStore: e.MaxStore, Logger: n.logger.With("component", "nats"),
	}
	if e.LeafListen != "" {
		ec.LeafListen, ec.LeafTLS, ec.PeerLeafUser, ec.PeerLeafPassword = e.LeafListen, n.keys.leafTLSFor(certs.RoleTLSClient, n.now), e.PeerUser, e.PeerPassword
	}
	if e.LeafRemote != "" {
		ec.LeafRemote, ec.LeafRemoteTLS, ec.LeafRemoteUser, ec.LeafRemotePassword = e.LeafRemote, n.keys.leafTLSFor(certs.RoleTLSServer, n.now), e.RemoteUser, e.RemotePass
	}
	emb, err := transport.StartEmbedded(ec)
	if err != nil {
		return "", "", "", fmt.Errorf("gateway: embedded NATS: %w", err)
	}
	n.mu.Lock()
	n.embedded = emb
	n.mu.Unlock()
	return emb.ClientURL(), "gw", pass, nil
}

func (n *Node) stopNATS() {
	n.mu.Lock()
	emb := n.embedded
	n.mu.Unlock()
	if emb != nil {
		emb.Shutdown()
	}
}

func (n *Node) layout() transport.LayoutConfig {
	return transport.LayoutConfig{
		Party: n.cfg.Party, Peer: n.cfg.Peer.Party, OutageBudget: n.cfg.budget(),
		MaxOutBytes: n.cfg.Limits.MaxOutBytes, MaxInBytes: n.cfg.Limits.MaxInBytes, Replicas: n.cfg.NATS.Replicas,
	}
}

func (n *Node) timeout() time.Duration {
	if n.cfg.NATS.Timeout > 0 {
		return n.cfg.NATS.Timeout
	}
	return 5 * time.Second
}

// setup creates the streams and buckets and builds the stages.
func (n *Node) setup(ctx context.Context, nc, bc *nats.Conn) error {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(n.timeout()))
	if err != nil {
		return err
	}
	if err := transport.EnsureLayout(ctx, js, n.layout()); err != nil {
		return fmt.Errorf("gateway: streams: %w", err)
	}
	kv := map[string]jetstream.KeyValue{}
	for _, b := range []string{transport.BucketStatus, transport.BucketSeen, transport.BucketIdem, transport.BucketReceipts, transport.BucketInbox} {
		if kv[b], err = js.KeyValue(ctx, b); err != nil {
			return fmt.Errorf("gateway: bucket %s: %w", b, err)
		}
	}
	n.js, n.statusKV = js, kv[transport.BucketStatus]
	n.opener = &envelope.Opener{
		Self: n.cfg.Party, Peer: n.keys.peerTrust, Keys: n.keys.decryption, MaxLifetime: n.cfg.budget() + 24*time.Hour,
		ValidateBody: envelope.ValidateBody,
	}
	n.sent, n.seen, n.rcpts = ledger.Sent(kv[transport.BucketStatus]), ledger.Seen(kv[transport.BucketSeen]), ledger.NewReceipts(kv[transport.BucketReceipts])
	n.sent.OnEvent, n.seen.OnEvent = n.onSentEvent, n.metrics.onEvent
	n.inbox = delivery.NewInbox(kv[transport.BucketInbox])
	n.recent = ledger.NewRecent(recentRecords)
	n.relayed = outbound.NewRelayed(outbound.RelayedConfig{Recent: n.recent, Logger: n.logger}, n.sent)
	n.sender, err = outbound.NewSender(outbound.SenderConfig{
		Party: n.cfg.Party, Peer: n.cfg.Peer.Party, Signer: n.keys.signing, PeerEncryption: n.keys.peerEncryption,
		OutageBudget: n.cfg.budget(), Now: n.now, Logger: n.logger, Tracing: n.tracing("outbound"), Recent: n.recent,
	}, js, n.sent)
	if err != nil {
		return err
	}
	bjs, err := jetstream.New(bc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	n.forwarder = outbound.NewForwarder(outbound.ForwarderConfig{
		Party: n.cfg.Party, Peer: n.cfg.Peer.Party, Now: n.now, Logger: n.logger, Tracing: n.tracing("outbound"),
		// The relayed event waits in memory for the write of the peer's
		// first receipt to carry it, or is written off the forwarder's loop.
		OnRelayed: func(ctx context.Context, id string, _ nats.Header) {
			n.relayed.Note(ctx, id, n.now())
		},
	}, js, bjs, n.sent)
	n.reconciler = outbound.NewReconciler(outbound.ReconcilerConfig{
		Interval: n.cfg.Reconcile.Interval, ResendAfter: n.cfg.Reconcile.ResendAfter, Now: n.now, Logger: n.logger}, n.statusKV, n.sent, n.forwarder)
	if err := n.observeLink(n.tel.Meter); err != nil {
		return err
	}
	n.issuer = receipts.NewIssuer(receipts.IssuerConfig{Party: n.cfg.Party, Peer: n.cfg.Peer.Party, Signer: n.keys.signing, Now: n.now, Logger: n.logger, Tracing: n.tracing("receipts")}, js, n.rcpts)
	return nil
}

// processor builds the inbound stage.
func (n *Node) processor() *inbound.Processor {
	opener := n.opener
	acceptor := receipts.NewAcceptor(receipts.AcceptorConfig{
		Verifier: &envelope.ReceiptVerifier{Self: n.cfg.Party, Peer: n.keys.peerTrust},
		Now:      n.now, Logger: n.logger, Tracing: n.tracing("receipts"),
		Relayed: n.relayed, Recent: n.recent, Hold: receiptHold, HoldMax: 2 * runtime.GOMAXPROCS(0),
	}, n.sent, n.rcpts)
	// CLIENT span named "POST" ({method}, as the HTTP semantic conventions
	// name a client span without a URL template).
	webhook := delivery.NewWebhook(delivery.WebhookConfig{Logger: n.logger, Transport: otelhttp.NewTransport(delivery.NewTransport(nil),
		otelhttp.WithTracerProvider(n.tel.Tracer), otelhttp.WithMeterProvider(n.tel.Meter), otelhttp.WithPropagators(n.tel.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))})
	d := &deliverer{dir: n.dir, webhook: webhook, inbox: n.inbox, metrics: n.metrics}
	return inbound.New(inbound.Config{
		Party: n.cfg.Party, Peer: n.cfg.Peer.Party, Now: n.now, Logger: n.logger, Tracing: n.tracing("inbound"),
		Backoff: delivery.Backoff,
		ReceiptPermanent: func(err error, attempt uint64) bool {
			if envelope.IsTransient(err) { // the peer's clock ahead of ours: hold it, never drop it
				return false
			}
			return errors.Is(err, receipts.ErrInvalid) || errors.Is(err, receipts.ErrMismatch) ||
				(errors.Is(err, receipts.ErrUnknownMessage) && attempt >= unknownReceiptAttempts)
		},
	}, n.js, n.seen, opener, n.issuer, acceptor, d, n.dir)
}

// unknownReceiptAttempts is how often a receipt for a message we have no
// record of is tried before it is refused: about two minutes at the inbound
// stage's 5 s retry. A record can appear that late: when a gateway dies
// between the outbox PubAck and the record, the message still goes out, and
// its record is written only when the client's retry takes the id over,
// which the ingress allows after IdemInFlightTimeout (30 s). A later retry
// gets its receipts from the reconciler's resend.
const unknownReceiptAttempts = 26

// serve runs the stages and the HTTP API until ctx ends.
func (n *Node) serve(ctx context.Context, nc *nats.Conn) error {
	ing, err := n.ingress()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", n.listen())
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	n.mu.Lock()
	n.httpAddr = ln.Addr()
	n.mu.Unlock()

	pipeCtx, stopPipe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipe()
	pipe, pipeCtx := errgroup.WithContext(pipeCtx)
	pipe.Go(func() error { return n.forwarder.Run(pipeCtx) })
	pipe.Go(func() error { return n.processor().Run(pipeCtx) })
	pipe.Go(func() error { return n.reconciler.Run(pipeCtx) })
	pipe.Go(func() error { return n.relayed.Run(pipeCtx) })

	httpCtx, stopHTTP := context.WithCancel(ctx)
	defer stopHTTP()
	httpDone := make(chan error, 1)
	go func() { httpDone <- ing.Run(httpCtx, ln, n.keys.httpTLS) }()
	close(n.started)
	n.logger.Info("gateway running", slog.String("party", n.cfg.Party), slog.String("http", ln.Addr().String()))

	var runErr error
	select {
	case <-ctx.Done():
	case <-pipeCtx.Done(): // a stage failed
	case runErr = <-httpDone:
		httpDone <- runErr
	}
	stopHTTP()
	if err := <-httpDone; err != nil && !errors.Is(err, context.Canceled) {
		runErr = errors.Join(runErr, err)
	}
	stopPipe()
	if err := pipe.Wait(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	_ = nc.Flush()
	n.logger.Info("gateway stopped", slog.String("party", n.cfg.Party))
	return runErr
}

// receiptHold is how long the peer's accepted receipt waits for its
// delivered one, to share one write of the message's record. Measured with
// cmx bench flat out: the two arrive a median 13 ms apart (p90 36 ms), and
// a 20 ms hold takes cmx_status from 3.0 to about 2.45 writes per message
// sent. The delivered receipt never waits, and at most half the inbound
// stage's receipt workers (4 × GOMAXPROCS by default) wait at once, so
// that the delivered receipts they wait for are still taken in.
const receiptHold = 20 * time.Millisecond

// recentRecords bounds the outbound records kept in memory for the
// receipts' writes (a few MB): the messages of a few seconds at full rate.
const recentRecords = 8192

// tracing returns the Tracing of one stage, named after its import path.
func (n *Node) tracing(stage string) transport.Tracing {
	return transport.NewTracing(n.tel.Tracer, n.tel.Propagator, "github.com/cmx-exchange/cmx/gateway/"+stage, n.cfg.Peer.TraceContext != "stop")
}

func (n *Node) listen() string {
	if n.cfg.Listen == "" {
		return "127.0.0.1:8443"
	}
	return n.cfg.Listen
}
