package transport

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// InboxPrefix is the reply prefix of the gateway's internal connection. The
// border carries "_INBOX.>" (PubAcks of cross-border publishes), so the
// gateway's own JetStream and KV replies use a prefix that never crosses.
const InboxPrefix = "_CMX_INBOX"

// Reconnect behaviour of gateway connections: retry forever, quickly, so a
// restarted local server is picked up without the gateway restarting.
const (
	reconnectWait   = 250 * time.Millisecond
	reconnectJitter = 100 * time.Millisecond
	connectTimeout  = 5 * time.Second
)

// Connect opens the gateway's internal connection to its own NATS system:
// JetStream streams, KV buckets, consumers. Its inboxes use InboxPrefix.
// opts are applied last and may override the defaults.
func Connect(ctx context.Context, url, user, password string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{nats.Name("cmxd"), nats.CustomInboxPrefix(InboxPrefix)}
	return connect(ctx, url, user, password, append(base, opts...))
}

// ConnectBorder opens the forwarder's connection, which publishes to the
// peer's inbound subjects across the leafnode. It keeps the default "_INBOX"
// reply prefix: the peer's PubAcks can only come back on "_INBOX.>". Use it
// for nothing else.
func ConnectBorder(ctx context.Context, url, user, password string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{nats.Name("cmxd-border")}
	return connect(ctx, url, user, password, append(base, opts...))
}

func connect(ctx context.Context, url, user, password string, opts []nats.Option) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: connect: %w", err)
	}
	timeout := connectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	base := []nats.Option{
		nats.UserInfo(user, password),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.ReconnectBufSize(-1), // fail publishes while disconnected instead of buffering them unseen
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("transport: connect %s: %w", url, err)
	}
	return nc, nil
}
