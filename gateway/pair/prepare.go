package pair

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/cmx-exchange/cmx/gateway"
)

// Prepare writes the PKI and both config files under opts.Dir and starts the
// sample webhook agencies, but starts no gateway. The HTTP and leafnode
// ports are chosen now and pinned in the configs, so each side can run as
// its own process (cmxd --config Side.ConfigPath), the deployment shape the
// benchmark measures, or in this one (Side.Start). Side.URL is set;
// Side.Node stays nil until Side.Start. Options.Proxy is not supported here.
// Stop closes the agencies (and stops any side started with Side.Start).
func Prepare(opts Options) (*Pair, error) {
	if opts.Proxy {
		return nil, errors.New("pair: Prepare does not support Options.Proxy")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pair{opts: opts}
	for _, party := range []string{"US", "JP"} {
		if err := writePKI(opts.Dir, party); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	leaf, secret := ports[2], rand.Text()
	jp, err := p.prepareSide("JP", "US", ports[0], func(c *gateway.Config) {
		c.NATS.Embedded.LeafListen = leaf
		c.NATS.Embedded.LeafTLS = gateway.KeyFiles{Cert: "pki/JP/tls-server.pem", Key: "pki/JP/tls-server.key"}
		c.NATS.Embedded.PeerUser, c.NATS.Embedded.PeerPassword = "us", secret
	})
	p.JP = jp
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.US, err = p.prepareSide("US", "JP", ports[1], func(c *gateway.Config) {
		c.NATS.Embedded.LeafRemote = "tls://" + leaf
		c.NATS.Embedded.LeafTLS = gateway.KeyFiles{Cert: "pki/US/tls-client.pem", Key: "pki/US/tls-client.key"}
		c.NATS.Embedded.RemoteUser, c.NATS.Embedded.RemotePass = "us", secret
	})
	if err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// prepareSide writes one side's config with the HTTP API on listen.
func (p *Pair) prepareSide(party, peer, listen string, tune func(*gateway.Config)) (*Side, error) {
	c, s, err := p.sideConfig(party, peer, tune)
	if err != nil {
		return s, err
	}
	c.Listen = listen
	s.URL = "http://" + listen
	return s, writeConfig(s.ConfigPath, c)
}

// freePorts returns n distinct free "127.0.0.1:port" addresses. They are
// released before use, so another process could take one in between; on
// loopback of a test machine that window is harmless.
func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pair: free port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}
