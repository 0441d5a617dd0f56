package deploy_test

import (
	"crypto/rand"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// TestUSCluster starts the three nodes of deploy/us-cluster in-process,
// creates the cmx layout with the replicas of us-cluster/cmxd.yaml (R3),
// publishes with PubAcks, shuts the outbox's leader down and checks that
// every acknowledged message is still there and publishing goes on.
func TestUSCluster(t *testing.T) {
	dir := filepath.Join(copyDeploy(t), dirCluster)
	writePKI(t, filepath.Join(dir, "pki"), "US")
	jp, err := certs.NewPKI("JP", certs.PKIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, filepath.Join(dir, "peer"), map[string][]byte{certs.FileBundle: certs.EncodeCertificates(jp.Root)})
	cfg := loadConfig(t, filepath.Join(dir, "cmxd.yaml"))
	if cfg.NATS.Replicas != 3 {
		t.Fatalf("us-cluster/cmxd.yaml: nats.replicas = %d, want 3", cfg.NATS.Replicas)
	}

	gwPassword := rand.Text()
	nodes := startCluster(t, dir, gwPassword)
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.clientURL()
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.UserInfo("gw", gwPassword),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := jsOf(t, nc)
	layout := transport.LayoutConfig{Party: "US", Peer: "JP", Replicas: cfg.NATS.Replicas}
	var last error
	metaLeader := func() bool { _, last = js.AccountInfo(shortCtx(t)); return last == nil }
	if !waitUntil(60*time.Second, metaLeader) {
		t.Fatalf("JetStream cluster has no meta leader: %v", last)
	}
	if err := transport.EnsureLayout(testCtx(t), js, layout); err != nil {
		t.Fatalf("EnsureLayout R3: %v", err)
	}
	if err := transport.CheckLayout(testCtx(t), js, layout); err != nil {
		t.Fatal(err)
	}

	const n = 50
	acked := publishN(t, js, 0, n)
	leader := streamLeader(t, js, "")
	for _, node := range nodes {
		if node.srv.Name() == leader {
			node.shutdown()
		}
	}
	newLeader := streamLeader(t, js, leader)
	t.Logf("CMX_OUT leader %s shut down, %s took over", leader, newLeader)
	checkStored(t, js, acked)
	acked = append(acked, publishN(t, js, n, 10)...)
	checkStored(t, js, acked)
}

// startCluster starts the three nodes from nats-1..3.conf, with routes on
// free loopback ports and the leafnode aimed at a closed port (JP plays no
// part here).
func startCluster(t *testing.T, dir, gwPassword string) []*natsServer {
	t.Helper()
	ports := freePorts(t, 4)
	routePassword := rand.Text()
	common := map[string]string{
		"CMXNATS_PORT": "-1", "CMXNATS_MONITOR_PORT": "-1", "CMXNATS_ROUTE_HOST": "127.0.0.1",
		"CMXNATS_ROUTE_PASSWORD": routePassword, "CMXNATS_GATEWAY_PASSWORD": bcryptHash(t, gwPassword),
		"CMXNATS_LEAF_URL": "tls://127.0.0.1:" + strconv.Itoa(ports[3]),
	}
	for i := range 3 {
		common[fmt.Sprintf("CMXNATS_ROUTE_%d", i+1)] = fmt.Sprintf("nats://route:%s@127.0.0.1:%d", routePassword, ports[i])
	}
	nodes := make([]*natsServer, 3)
	for i := range nodes {
		env := cloneEnv(common)
		env["CMXNATS_ROUTE_PORT"] = strconv.Itoa(ports[i])
		env["CMXNATS_STORE_DIR"] = filepath.Join(dir, "var", fmt.Sprintf("nats-%d", i+1))
		name := fmt.Sprintf("nats-%d", i+1)
		nodes[i] = startNATS(t, name, filepath.Join(dir, name+".conf"), natsEnv(t, dir, env))
	}
	waitUntil(30*time.Second, func() bool {
		for _, n := range nodes {
			if n.srv.NumRoutes() < 2 {
				return false
			}
		}
		return true
	})
	return nodes
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// publishN publishes count outbox messages numbered from first and returns
// their PubAcks' sequences with the data, in order.
func publishN(t *testing.T, js jetstream.JetStream, first, count int) []storedMsg {
	t.Helper()
	var out []storedMsg
	for i := first; i < first+count; i++ {
		data := fmt.Sprintf("envelope %d", i)
		var ack *jetstream.PubAck
		var err error
		// A PubAck lost in a leader change is retried with the same Msg-Id.
		ok := waitUntil(20*time.Second, func() bool {
			ack, err = js.Publish(shortCtx(t), transport.OutMsgSubject("JP", "labor_enforcement_notice"), []byte(data),
				jetstream.WithMsgID(fmt.Sprintf("msg-%d", i)), jetstream.WithExpectStream(transport.StreamOut))
			return err == nil
		})
		if !ok {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ack.Domain != "us" {
			t.Fatalf("PubAck from domain %q, want us", ack.Domain)
		}
		out = append(out, storedMsg{seq: ack.Sequence, data: data})
	}
	return out
}

type storedMsg struct {
	seq  uint64
	data string
}

// streamLeader waits for CMX_OUT to have a leader other than not and
// returns its server name.
func streamLeader(t *testing.T, js jetstream.JetStream, not string) string {
	t.Helper()
	var leader string
	ok := waitUntil(30*time.Second, func() bool {
		s, err := js.Stream(shortCtx(t), transport.StreamOut) // unanswered while there is no leader
		if err != nil {
			return false
		}
		info := s.CachedInfo()
		if info.Cluster != nil {
			leader = info.Cluster.Leader
		}
		return leader != "" && leader != not
	})
	if !ok {
		t.Fatalf("CMX_OUT has no leader other than %q", not)
	}
	return leader
}

// checkStored reads every acknowledged message back by its sequence.
func checkStored(t *testing.T, js jetstream.JetStream, acked []storedMsg) {
	t.Helper()
	s, err := js.Stream(testCtx(t), transport.StreamOut)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("CMX_OUT replicas %d, want 3", got)
	}
	for _, m := range acked {
		got, err := s.GetMsg(testCtx(t), m.seq)
		if err != nil || string(got.Data) != m.data {
			t.Fatalf("acknowledged message %d: %v, %v; want %q", m.seq, got, err, m.data)
		}
	}
	if info, err := s.Info(testCtx(t)); err != nil || info.State.Msgs != uint64(len(acked)) {
		t.Fatalf("CMX_OUT holds %v messages (%v), want %d", info, err, len(acked))
	}
}
