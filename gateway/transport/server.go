package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// AccountExchange is the account that carries all exchange traffic. The
// border user and the local gateway user live in it and nothing else does,
// so "_INBOX.>" on the border reaches no other application.
const AccountExchange = "XCHG"

// Defaults of EmbeddedConfig.
const (
	DefaultMaxPayload    = int32(8 << 20)
	DefaultLeafReconnect = 2 * time.Second
	readyTimeout         = 10 * time.Second
)

// ErrConfig is matched by every EmbeddedConfig validation error.
var ErrConfig = errors.New("transport: invalid embedded server config")

// EmbeddedConfig configures an in-process nats-server for one party. Fields
// must not change after StartEmbedded. Zero values have the meanings given.
type EmbeddedConfig struct {
	Party, Peer string // party codes, e.g. "US" and "JP"; subjects and the JetStream domain use lower case

	StoreDir string // JetStream store directory; required
	Host     string // client listen host; "" = 127.0.0.1
	Port     int    // client port; 0 = a random free port

	// The local cmxd's user in account XCHG, with all permissions inside it.
	// It may connect as a client only, never as a leafnode.
	GatewayUser, GatewayPassword string

	// Accepting side of the border. LeafListen "" means no listener.
	LeafListen string // "host:port"; port 0 = a random free port
	// LeafTLS is the listener's TLS: a certificate, ClientCAs = the peer's
	// roots and ClientAuth = tls.RequireAndVerifyClientCert (checked).
	// MinVersion is raised to TLS 1.3. The handshake comes first.
	LeafTLS *tls.Config
	// The credentials the peer's leafnode presents. This user's permissions
	// are the border: publish cmx.x.<peer>.<self>.> and _INBOX.>, receive
	// cmx.x.<self>.<peer>.> and _INBOX.>. It may connect as a leafnode only.
	PeerLeafUser, PeerLeafPassword string

	// Soliciting side of the border. LeafRemote "" means none.
	LeafRemote string // "tls://host:port" of the peer's leafnode listener
	// LeafRemoteTLS is the client TLS: a client certificate and RootCAs =
	// the peer's roots (checked). MinVersion is raised to TLS 1.3.
	LeafRemoteTLS                      *tls.Config
	LeafRemoteUser, LeafRemotePassword string
	LeafReconnect                      time.Duration // delay between leafnode connect attempts; 0 = 2 s

	MaxPayload int32        // 0 = 8 MiB
	MaxStore   int64        // JetStream file store limit in bytes; 0 = server default
	Logger     *slog.Logger // nil discards; nats-server's log goes here
}

// Validate reports every problem of cfg at once, each matching ErrConfig.
func (cfg EmbeddedConfig) Validate() error {
	var errs []error
	add := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...))
	}
	for _, err := range validateParties(cfg.Party, cfg.Peer) {
		add("%v", err)
	}
	if cfg.StoreDir == "" {
		add("StoreDir is required")
	}
	if cfg.GatewayUser == "" || cfg.GatewayPassword == "" {
		add("GatewayUser and GatewayPassword are required")
	}
	if cfg.Port < 0 || cfg.MaxPayload < 0 || cfg.MaxStore < 0 || cfg.LeafReconnect < 0 {
		add("negative Port, MaxPayload, MaxStore or LeafReconnect")
	}
	if cfg.LeafListen != "" {
		errs = append(errs, cfg.validateListen()...)
	}
	if cfg.LeafRemote != "" {
		errs = append(errs, cfg.validateRemote()...)
	}
	return errors.Join(errs...)
}

func (cfg EmbeddedConfig) validateListen() []error {
	var errs []error
	add := func(msg string) { errs = append(errs, fmt.Errorf("%w: %s", ErrConfig, msg)) }
	if _, _, err := splitHostPort(cfg.LeafListen); err != nil {
		add(err.Error())
	}
	t := cfg.LeafTLS
	switch {
	case t == nil:
		add("LeafTLS is required with LeafListen")
	case len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil:
		add("LeafTLS has no certificate")
	case t.ClientCAs == nil || t.ClientAuth != tls.RequireAndVerifyClientCert:
		add("LeafTLS must set ClientCAs (the peer's roots) and ClientAuth RequireAndVerifyClientCert")
	}
	if cfg.PeerLeafUser == "" || cfg.PeerLeafPassword == "" {
		add("PeerLeafUser and PeerLeafPassword are required with LeafListen")
	}
	if cfg.PeerLeafUser != "" && cfg.PeerLeafUser == cfg.GatewayUser {
		add("PeerLeafUser must differ from GatewayUser")
	}
	return errs
}

func (cfg EmbeddedConfig) validateRemote() []error {
	var errs []error
	add := func(msg string) { errs = append(errs, fmt.Errorf("%w: %s", ErrConfig, msg)) }
	u, err := url.Parse(cfg.LeafRemote)
	switch {
	case err != nil:
		add("LeafRemote: " + err.Error())
	case u.Scheme != "tls" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/"):
		add("LeafRemote must be tls://host:port without credentials")
	}
	t := cfg.LeafRemoteTLS
	switch {
	case t == nil:
		add("LeafRemoteTLS is required with LeafRemote")
	case t.RootCAs == nil:
		add("LeafRemoteTLS must set RootCAs (the peer's roots)")
	case len(t.Certificates) == 0 && t.GetClientCertificate == nil:
		add("LeafRemoteTLS has no client certificate")
	}
	if cfg.LeafRemoteUser == "" || cfg.LeafRemotePassword == "" {
		add("LeafRemoteUser and LeafRemotePassword are required with LeafRemote")
	}
	return errs
}

// splitHostPort parses "host:port" with a port in 0..65535.
func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("LeafListen %q: %w", hp, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("LeafListen %q: bad port", hp)
	}
	return host, port, nil
}

// Embedded is a running in-process nats-server. Its methods are safe for
// concurrent use.
type Embedded struct {
	cfg      EmbeddedConfig
	srv      *server.Server
	log      *fatalRecorder
	shutdown sync.Once
}

// StartEmbedded validates cfg, starts the server and waits up to 10 s until
// it accepts connections with JetStream (and the leafnode listener, if any)
// running. The leafnode link may come up later: see LeafConnected.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("transport: new server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rec := &fatalRecorder{serverLogger: serverLogger{logger}}
	// Protocol tracing stays off whatever the level: it logs message payloads.
	srv.SetLoggerV2(rec, logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	e := &Embedded{cfg: cfg, srv: srv, log: rec}
	srv.Start()
	if err := e.waitReady(); err != nil {
		e.Shutdown()
		return nil, err
	}
	return e, nil
}

func (e *Embedded) waitReady() error {
	// A failed listener logs a fatal error and leaves Start early; poll so
	// that shows at once instead of after the whole timeout.
	deadline := time.Now().Add(readyTimeout)
	for !e.srv.ReadyForConnections(50 * time.Millisecond) {
		if msg, fatal := e.log.fatal(); fatal || time.Now().After(deadline) {
			return fmt.Errorf("transport: server %s not ready: %s", e.cfg.Party, msg)
		}
	}
	if !e.srv.JetStreamEnabled() {
		msg, _ := e.log.fatal()
		return fmt.Errorf("transport: JetStream did not start: %s", msg)
	}
	acc, err := e.srv.LookupAccount(AccountExchange)
	if err != nil || !acc.JetStreamEnabled() {
		return fmt.Errorf("transport: JetStream not enabled in account %s: %v", AccountExchange, err)
	}
	return nil
}

// options translates cfg (validated) into server options.
func (cfg EmbeddedConfig) options() (*server.Options, error) {
	opts := &server.Options{}
	// The one thing server.Options cannot say without a config parser is
	// "this account has JetStream" (the account's limits are unexported), so
	// the account itself comes from the same line the deploy configs use.
	if err := opts.ProcessConfigString("accounts { " + AccountExchange + " { jetstream: enabled } }"); err != nil {
		return nil, fmt.Errorf("transport: account options: %w", err)
	}
	xchg := opts.Accounts[0]
	self, peer := token(cfg.Party), token(cfg.Peer)

	opts.ServerName = "cmx-" + self
	opts.Host, opts.Port = cfg.Host, cfg.Port
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.NoSigs = true // the embedding process owns signals
	opts.DisableJetStreamBanner = true
	opts.MaxPayload = cfg.MaxPayload
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	opts.JetStream = true
	opts.JetStreamDomain = self
	opts.StoreDir = cfg.StoreDir
	opts.SyncAlways = true // acknowledged writes survive power loss (DESIGN §5)
	opts.JetStreamMaxStore = cfg.MaxStore

	opts.Users = []*server.User{{
		Username: cfg.GatewayUser, Password: cfg.GatewayPassword, Account: xchg,
		AllowedConnectionTypes: connTypes(jwt.ConnectionTypeStandard, jwt.ConnectionTypeInProcess),
	}}
	if cfg.LeafListen != "" {
		if err := cfg.leafListenOptions(opts, xchg, self, peer); err != nil {
			return nil, err
		}
	}
	if cfg.LeafRemote != "" {
		if err := cfg.leafRemoteOptions(opts, self, peer); err != nil {
			return nil, err
		}
	}
	opts.LeafNode.ReconnectInterval = cfg.LeafReconnect
	if opts.LeafNode.ReconnectInterval == 0 {
		opts.LeafNode.ReconnectInterval = DefaultLeafReconnect
	}
	return opts, nil
}

// BorderPermissions are the permissions of the peer's leafnode user on the
// accepting side, written from the leafnode's point of view as in a config
// file: it may publish into our inbound subjects and replies, and receive
// our outbound subjects and replies. Nothing else crosses (DESIGN §5).
func BorderPermissions(self, peer string) *server.Permissions {
	self, peer = token(self), token(peer)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{xPrefix + peer + "." + self + ".>", "_INBOX.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{xPrefix + self + "." + peer + ".>", "_INBOX.>"}},
	}
}

func (cfg EmbeddedConfig) leafListenOptions(opts *server.Options, xchg *server.Account, self, peer string) error {
	host, port, err := splitHostPort(cfg.LeafListen)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	// No leafnode-level authorization block: the leaf then authenticates
	// against the users table and gets that user's permissions. (Users in
	// LeafNodeOpts.Users would bind the account but drop the permissions.)
	opts.Users = append(opts.Users, &server.User{
		Username: cfg.PeerLeafUser, Password: cfg.PeerLeafPassword, Account: xchg,
		Permissions:            BorderPermissions(self, peer),
		AllowedConnectionTypes: connTypes(jwt.ConnectionTypeLeafnode),
	})
	opts.LeafNode.Host, opts.LeafNode.Port = host, port
	opts.LeafNode.TLSConfig = tls13(cfg.LeafTLS)
	opts.LeafNode.TLSHandshakeFirst = true // no INFO in clear text to unauthenticated peers
	return nil
}

// DenyImports and DenyExports of the soliciting side's remote: defence in
// depth behind the accepting side's user permissions, so that neither
// JetStream/KV/system APIs, the gateway's private inboxes, the outbox nor the
// audit subjects cross the link even if the peer's permissions were wrong.
//
// Imports are what the peer may send us, exports what we may send it. On
// nats-server 2.15.2 a deny_imports entry also stops exports: it becomes a
// subscribe-deny of the leafnode connection, which filters deliveries to the
// peer as well. So our own outbound subjects cmx.x.<self>.<peer>.> must not
// be listed here (they would never reach the peer); the peer's user
// permissions and the absence of any local subscriber on them cover that
// direction.
func DenyImports(self, peer string) []string {
	return denyCommon()
}

// DenyExports lists what we never send the peer: the common set and the
// peer's own outbound subjects cmx.x.<peer>.<self>.>.
func DenyExports(self, peer string) []string {
	return append(denyCommon(), xPrefix+token(peer)+"."+token(self)+".>")
}

func denyCommon() []string {
	return []string{"$JS.>", "$KV.>", "$SYS.>", "$O.>", "_CMX_INBOX.>", "cmx.out.>", auditSubjects}
}

func (cfg EmbeddedConfig) leafRemoteOptions(opts *server.Options, self, peer string) error {
	u, err := url.Parse(cfg.LeafRemote)
	if err != nil {
		return fmt.Errorf("%w: LeafRemote: %v", ErrConfig, err)
	}
	u.User = url.UserPassword(cfg.LeafRemoteUser, cfg.LeafRemotePassword)
	opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{
		LocalAccount:      AccountExchange,
		URLs:              []*url.URL{u},
		TLS:               true,
		TLSConfig:         tls13(cfg.LeafRemoteTLS),
		TLSHandshakeFirst: true,
		DenyImports:       DenyImports(self, peer),
		DenyExports:       DenyExports(self, peer),
		// Only the configured URL: the peer's INFO advertises its leafnode
		// listener's own addresses, and reconnecting to those would go
		// around the border endpoint we were given.
		IgnoreDiscoveredServers: true,
	})
	return nil
}

func tls13(c *tls.Config) *tls.Config {
	c = c.Clone()
	if c.MinVersion < tls.VersionTLS13 {
		c.MinVersion = tls.VersionTLS13
	}
	return c
}

func connTypes(types ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(types))
	for _, t := range types {
		m[t] = struct{}{}
	}
	return m
}

// Server returns the underlying server, for monitoring and tests.
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL is the URL local clients connect to, e.g. nats://127.0.0.1:4222.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// LeafURL is the URL the peer solicits, tls://host:port with the actual
// port; "" without LeafListen. An unspecified host is reported as 127.0.0.1.
func (e *Embedded) LeafURL() string {
	if e.cfg.LeafListen == "" {
		return ""
	}
	host, _, _ := splitHostPort(e.cfg.LeafListen)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	v, err := e.srv.Varz(nil)
	if err != nil {
		return ""
	}
	return "tls://" + net.JoinHostPort(host, strconv.Itoa(v.LeafNode.Port))
}

// LeafConnected reports whether a leafnode connection is up.
func (e *Embedded) LeafConnected() bool { return e.srv.NumLeafNodes() > 0 }

// Shutdown stops the server and waits until it is down. Safe to call twice.
func (e *Embedded) Shutdown() {
	e.shutdown.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

// fatalRecorder remembers the last error and whether a fatal one was
// logged, to explain a failed start.
type fatalRecorder struct {
	serverLogger
	mu       sync.Mutex
	msg      string
	hadFatal bool
}

func (f *fatalRecorder) Fatalf(format string, v ...any) {
	f.record(true, format, v)
	f.serverLogger.Fatalf(format, v...)
}

func (f *fatalRecorder) Errorf(format string, v ...any) {
	f.record(false, format, v)
	f.serverLogger.Errorf(format, v...)
}

func (f *fatalRecorder) record(fatal bool, format string, v []any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msg = fmt.Sprintf(format, v...)
	f.hadFatal = f.hadFatal || fatal
}

// fatal returns the last error message and whether a fatal one was logged.
func (f *fatalRecorder) fatal() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.msg == "" {
		return "no error logged", f.hadFatal
	}
	return "last error: " + f.msg, f.hadFatal
}
