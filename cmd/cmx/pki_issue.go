package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cmx-exchange/cmx/certs"
)

// defaultIssueValidity is the validity of a leaf from "cmx pki issue", the
// profile's one year.
const defaultIssueValidity = 365 * 24 * time.Hour

// issueNameRE bounds --name to one plain file name component: no path
// separator, no leading dot.
var issueNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// issueRequest is "cmx pki issue" after its flags were checked.
type issueRequest struct {
	caDir, out, name string
	role             certs.Role
	hosts            []string // tls-server only; nil = the hosts of the current tls-server.pem
	validity         time.Duration
	force            bool
	now              time.Time
}

// pkiIssue implements "cmx pki issue": one new gateway leaf of a role from
// the party's intermediate, for renewal and key rotation, written under a
// new name so that the key it replaces is never overwritten.
func pkiIssue(args []string, stdout, stderr io.Writer) error {
	req, err := parseIssueFlags(args, stderr)
	if err != nil {
		return err
	}
	p, err := loadPKIDir(req.caDir)
	if err != nil {
		return fmt.Errorf("pki issue: %w", err)
	}
	opts := certs.PKIOptions{Now: req.now, LeafValidity: req.validity}
	if req.role == certs.RoleTLSServer {
		if opts.Hosts, err = issueHosts(p, req.hosts); err != nil {
			return fmt.Errorf("pki issue: %w", err)
		}
	}
	id, err := p.Issue(req.role, opts)
	if err != nil {
		return fmt.Errorf("pki issue: %w", err)
	}
	keyPEM, err := certs.EncodePrivateKey(id.Key)
	if err != nil {
		return fmt.Errorf("pki issue: %w", err)
	}
	files := map[string][]byte{
		req.name + ".pem": certs.EncodeCertificates(id.Chain...),
		req.name + ".key": keyPEM,
	}
	if err := writeFiles(req.out, files, req.force, stderr); errors.Is(err, errWouldOverwrite) {
		return fmt.Errorf("pki issue: %w; a new key wants a new --name", err)
	} else if err != nil {
		return fmt.Errorf("pki issue: %w", err)
	}
	printIssued(stdout, req, p, id)
	return nil
}

func parseIssueFlags(args []string, stderr io.Writer) (*issueRequest, error) {
	fs := flag.NewFlagSet("cmx pki issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDir := fs.String("ca", "", "directory written by 'cmx pki init' (needs intermediate.pem and intermediate.key; root.key may be offline) (required)")
	role := fs.String("role", "", "role of the new leaf: encryption, signing, tls-server or tls-client (required)")
	out := fs.String("out", "", "directory to write NAME.pem and NAME.key to (required)")
	name := fs.String("name", "", "base name of the files (default <role>-<YYYYMMDD>, UTC)")
	hosts := fs.String("hosts", "", "tls-server only: comma-separated DNS names and IPs (default: those of tls-server.pem in --ca)")
	validity := fs.Duration("validity", defaultIssueValidity, "validity of the leaf, capped at the intermediate's expiry")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *caDir == "" || *role == "" || *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return nil, errors.New("pki issue: --ca, --role and --out are required, and nothing else")
	}
	req := &issueRequest{caDir: *caDir, out: *out, name: *name, role: certs.Role(*role),
		validity: *validity, force: *force, now: time.Now().Truncate(time.Second)}
	if !slices.Contains([]certs.Role{certs.RoleEncryption, certs.RoleSigning, certs.RoleTLSServer, certs.RoleTLSClient}, req.role) {
		return nil, fmt.Errorf("pki issue: --role %q is not encryption, signing, tls-server or tls-client (agency certificates: cmx pki agency)", *role)
	}
	if req.name == "" {
		req.name = string(req.role) + "-" + req.now.UTC().Format("20060102")
	}
	if !issueNameRE.MatchString(req.name) {
		return nil, fmt.Errorf("pki issue: --name %q must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", req.name)
	}
	if req.validity <= 0 {
		return nil, fmt.Errorf("pki issue: --validity %v must be positive", req.validity)
	}
	if *hosts != "" {
		if req.role != certs.RoleTLSServer {
			return nil, errors.New("pki issue: --hosts applies to --role tls-server only")
		}
		req.hosts = splitList(*hosts)
	}
	return req, nil
}

// issueHosts returns the hosts of a new TLS server certificate: those given,
// else those of the current one (a renewal keeps its names, first the
// common name, which is the first host).
func issueHosts(p *certs.PKI, given []string) ([]string, error) {
	if len(given) > 0 {
		return given, nil
	}
	if p.TLSServer == nil {
		return nil, fmt.Errorf("--hosts is required: no %s to take the hosts from", certs.FileTLSServer)
	}
	return hostsOf(p.TLSServer.Cert), nil
}

func hostsOf(c *x509.Certificate) []string {
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	if i := slices.Index(hosts, c.Subject.CommonName); i > 0 {
		cn := hosts[i]
		hosts = slices.Insert(slices.Delete(hosts, i, i+1), 0, cn)
	}
	return hosts
}

func splitList(s string) []string {
	var out []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func printIssued(w io.Writer, req *issueRequest, p *certs.PKI, id *certs.Identity) {
	c := id.Cert
	fmt.Fprintf(w, "issued a new %s certificate of %s from %q\n", id.Role, id.Party, p.Intermediate.Subject.CommonName)
	fmt.Fprintf(w, "  kid:        %s (x5t#S256)\n", id.KID)
	fmt.Fprintf(w, "  not before: %s\n", c.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  not after:  %s\n", c.NotAfter.UTC().Format(time.RFC3339))
	if len(c.DNSNames)+len(c.IPAddresses) > 0 {
		fmt.Fprintf(w, "  hosts:      %s\n", strings.Join(hostsOf(c), ", "))
	}
	if c.NotAfter.Before(req.now.Add(req.validity)) {
		fmt.Fprintf(w, "  (capped at the intermediate's expiry; --validity asked for %s)\n", req.now.Add(req.validity).UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "wrote %s.pem (leaf + intermediate) and %s.key (mode 0600) to %s\n", req.name, req.name, req.out)
	if id.Role == certs.RoleEncryption {
		printEncryptionSteps(w, req.name, id.KID)
		return
	}
	fmt.Fprintf(w, "\nIt chains to the root the peer already pins: nothing goes to the peer.\n"+
		"On the gateway host put %[1]s.pem/.key in place of %[2]s.pem/.key (the names the configs use),\nthen %[3]s",
		req.name, id.Role, renewSteps[id.Role])
}

// renewSteps says what reads each role's files (deploy/README.md, Rotation).
var renewSteps = map[certs.Role]string{
	certs.RoleSigning: "restart every cmxd replica (cmxd.yaml signing:). Receipts signed with the old key stay verifiable.\n",
	certs.RoleTLSServer: "restart cmxd (cmxd.yaml tls:, the API) and, where NATS accepts the leafnode (nats.env\n" +
		"CMXNATS_TLS_CERT/KEY), run 'systemctl reload cmx-nats': it re-reads TLS files on reload.\n",
	certs.RoleTLSClient: "run 'systemctl reload cmx-nats' where NATS solicits the leafnode (nats.env\n" +
		"CMXNATS_TLS_CERT/KEY): it re-reads TLS files on reload.\n",
}

// printEncryptionSteps prints the rotation of deploy/README.md for the new
// key, with the YAML lines as they go into cmxd.yaml's encryption list.
func printEncryptionSteps(w io.Writer, name, kid string) {
	fmt.Fprintf(w, `
rotation (deploy/README.md, Rotation):
1. Copy %[1]s.pem and %[1]s.key beside the current key on every cmxd host
   (/etc/cmx/pki/), add these lines to the encryption: list of cmxd.yaml and keep the old entry:

  - cert: pki/%[1]s.pem
    key: pki/%[1]s.key

   then restart every cmxd replica. Both keys decrypt (chosen by the JWE kid); the new one is current.
2. Send %[1]s.pem (public, never the .key) to the peer and confirm its kid out of band:
   %[2]s
   The peer installs it as its peer.encryption (peer/encryption.pem) and restarts its cmxd;
   from then on it encrypts to the new key.
3. Once the peer confirms the switch, add to the OLD entry of encryption: the time of the switch:

    retired_at: <time of the switch, RFC 3339: YYYY-MM-DDThh:mm:ssZ>

   It still decrypts envelopes sealed before the switch until retired_at + outage_budget (168h
   by default); after that, remove the old entry and destroy its key.
`, name, kid)
}
