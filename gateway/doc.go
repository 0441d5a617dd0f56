// Package gateway is one cmx gateway, cmxd: it composes the pipeline stages
// (DESIGN.md §3) and owns their lifecycle.
//
// New reads and checks everything a Config names — certificates and keys
// against the cmx profile, the peer's pinned roots and encryption
// certificate — and starts nothing. Run starts, in order: the embedded
// nats-server (unless Config.NATS.URL names an external one), the internal
// and the border NATS connections, the streams and buckets of the layout,
// the stages (forwarder, inbound processor, reconciler, relayed-event
// recorder) and last the HTTP API. It stops in pipeline order: HTTP intake
// first, then the stages (messages pulled but not handled are handed back),
// then NATS. A restart on the same store resumes where the last run stopped.
//
// Config is one YAML file (LoadConfig), every scalar key overridable by a
// CMX_<PATH> environment variable (ApplyEnv); Validate reports every
// problem at once. The root package also implements the HTTP backend
// (backend.go), routes deliveries to webhooks or pull inboxes (deliver.go,
// directory.go) and defines the metrics (metrics.go); the stages under
// gateway/ never import each other.
package gateway
