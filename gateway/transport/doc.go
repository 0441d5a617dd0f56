// Package transport is cmx's NATS/JetStream layer: the embedded
// nats-server, the border between the two parties' NATS systems, the stream
// and KV layout, connections and the trace-context carrier.
//
// # Border (DESIGN §2, §5)
//
// Each party runs its own server with JetStream domain = lower-case party
// code ("us", "jp") and one exchange account, XCHG. The accepting side
// (LeafListen) requires TLS 1.3 with the handshake first and a client
// certificate from the peer's roots; the leafnode then authenticates as an
// ordinary user of XCHG (PeerLeafUser) whose permissions are the border:
// it may publish cmx.x.<peer>.<self>.> and _INBOX.> and receive
// cmx.x.<self>.<peer>.> and _INBOX.> (BorderPermissions). That user may
// connect only as a leafnode, the gateway user only as a client. The
// soliciting side (LeafRemote) binds the remote to XCHG and adds
// DenyImports/DenyExports as defence in depth. Neither side's JetStream
// API, KV, system account, outbox or private inbox (_CMX_INBOX) crosses.
//
// A cross-border publish is a JetStream publish on the peer's inbound
// subject (XMsgSubject, XRcptSubject): the peer's CMX_IN stores it and its
// PubAck (Domain = peer's domain) comes back on _INBOX.>. The PubAck is a
// transport acknowledgement only; proof of receipt is the signed receipt.
//
// N-12: the border user cannot publish anything but the inbound subjects,
// but the local gateway user has all permissions in XCHG and can publish to
// CMX_IN's subjects directly. Everything in CMX_IN is therefore untrusted
// until the envelope is opened and its signed claims checked (subjects and
// headers are routing hints only).
//
// # Durability
//
// StartEmbedded always sets sync_interval: always (SyncAlways): a PubAck
// means the message was fsynced. All streams and buckets use file storage.
//
// # Layout
//
// EnsureLayout creates or updates CMX_OUT, CMX_IN, CMX_AUDIT and the KV
// buckets; it is idempotent and safe to run from several replicas.
// CheckLayout is the readiness check and reports every difference from the
// contract as a *LayoutError (errors.Is(err, ErrLayout)). Subjects are
// built by OutMsgSubject, OutRcptSubject, XMsgSubject and XRcptSubject and
// parsed strictly by ParseXSubject.
//
// # Connections
//
// Connect opens the gateway's internal connection (inbox prefix _CMX_INBOX,
// so its replies never use the border's _INBOX.>); ConnectBorder opens the
// forwarder's connection, whose default _INBOX prefix lets the peer's
// PubAcks come back. Both reconnect forever and do not buffer publishes
// while disconnected.
//
// # Concurrency
//
// Embedded's methods and the package functions are safe for concurrent
// use. HeaderCarrier is a map and is not.
package transport
