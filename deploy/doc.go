// Package deploy holds no code: it is the deployment of cmx for the two
// governments, and its tests prove that the files work as written.
//
// # Files
//
//	us/, jp/      nats.conf (nats-server), nats.env (its install values),
//	              cmxd.yaml (the gateway against that external server)
//	us-cluster/   three nats-server nodes (nats-1..3.conf + cluster.inc),
//	              nats.env and cmxd.yaml with R3 streams (nats.replicas: 3)
//	systemd/      hardened units for nats-server and cmxd, sysusers file
//	Dockerfile, compose.yaml   container image and a two-side trial
//	README.md     the operator's guide
//
// # Templating
//
// The nats-server configs are used exactly as committed: every value that
// depends on the installation (paths, ports, the peer's address, secrets) is
// an environment reference $CMXNATS_*, which nats-server resolves when it
// parses the file. nats.env beside each config gives the install values
// (/etc/cmx/..., /var/lib/cmx/...); systemd loads it with EnvironmentFile.
// Secrets come from a second file that is never committed. The tests set
// the same variables to temporary paths and random ports, parse the files
// with server.ProcessConfigFile and start the servers in-process.
//
// The cmxd configs name files relative to their own directory (the
// install layout is /etc/cmx/{cmxd.yaml,pki/,peer/}); the tests copy them
// into a temporary tree of the same shape and override only the listen
// address, the NATS URL and password and the agencies' webhook URLs, through
// cmxd's CMX_* environment variables.
//
// # Tests
//
// The tests build cmxd and cmx from this repository, create both parties'
// PKI with "cmx pki init", exchange only bundle.pem and encryption.pem, boot
// both NATS servers from their configs, run two cmxd processes, exchange all
// three message types both ways, restart one side's NATS server and the
// other side's cmxd and check that every message ends delivered exactly
// once. They probe the border from the peer's side (catalogue N-05, N-06,
// N-12), run the three-node cluster with R3 streams through the loss of a
// node, lint every config, and verify the systemd units with systemd-analyze
// when it is installed.
package deploy
