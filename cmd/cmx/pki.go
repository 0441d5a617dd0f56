package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cmx-exchange/cmx/certs"
)

const pkiUsage = `usage:
  cmx pki init --party XX --out DIR [--hosts a,b] [--force]
  cmx pki inspect FILE...
  cmx pki agency --ca DIR --agency NAME --out DIR [--force]
  cmx pki issue --ca DIR --role encryption|signing|tls-server|tls-client --out DIR
                [--name NAME] [--hosts a,b] [--validity 8760h] [--force]`

// runPKI implements "cmx pki": create a party's CA and gateway certificates,
// issue agency client certificates and single new gateway leaves (renewal,
// key rotation), and inspect certificates.
func runPKI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, pkiUsage)
		return errors.New("pki: missing subcommand")
	}
	var err error
	switch args[0] {
	case "init":
		err = pkiInit(args[1:], stdout, stderr)
	case "inspect":
		err = pkiInspect(args[1:], stdout, stderr)
	case "agency":
		err = pkiAgency(args[1:], stdout, stderr)
	case "issue":
		err = pkiIssue(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, pkiUsage)
		return nil
	default:
		fmt.Fprintln(stderr, pkiUsage)
		return fmt.Errorf("pki: unknown subcommand %q", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func pkiInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cmx pki init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	party := fs.String("party", "", "party code, two upper-case letters (required)")
	out := fs.String("out", "", "directory to write the PKI to (required)")
	hosts := fs.String("hosts", "", "comma-separated DNS names and IPs of the TLS server certificate (default localhost,127.0.0.1,::1)")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *party == "" || *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("pki init: --party and --out are required, and nothing else")
	}
	opts := certs.PKIOptions{}
	if *hosts != "" {
		for _, h := range strings.Split(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				opts.Hosts = append(opts.Hosts, h)
			}
		}
	}
	p, err := certs.NewPKI(*party, opts)
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	files, err := p.Files()
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	if err := writeFiles(*out, files, *force, stderr); err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	fmt.Fprintf(stdout, "wrote the %s PKI to %s (%d files)\n", p.Party, *out, len(files))
	fmt.Fprintf(stdout, "signing kid:    %s\nencryption kid: %s\n", p.Signing.KID, p.Encryption.KID)
	fmt.Fprintf(stdout, "give %s to the peer; move root.key offline\n", certs.FileBundle)
	return nil
}

func pkiAgency(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cmx pki agency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDir := fs.String("ca", "", "directory written by 'cmx pki init' (needs intermediate.key) (required)")
	agency := fs.String("agency", "", "agency name, e.g. DOL-ILAB (required)")
	out := fs.String("out", "", "directory to write the agency certificate to (required)")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *caDir == "" || *agency == "" || *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("pki agency: --ca, --agency and --out are required, and nothing else")
	}
	p, err := loadPKIDir(*caDir)
	if err != nil {
		return fmt.Errorf("pki agency: %w", err)
	}
	id, err := p.IssueAgencyClient(*agency, certs.PKIOptions{})
	if err != nil {
		return fmt.Errorf("pki agency: %w", err)
	}
	keyPEM, err := certs.EncodePrivateKey(id.Key)
	if err != nil {
		return fmt.Errorf("pki agency: %w", err)
	}
	base := "agency-" + *agency
	files := map[string][]byte{
		base + ".pem":    certs.EncodeCertificates(id.Chain...),
		base + ".key":    keyPEM,
		certs.FileBundle: certs.EncodeCertificates(p.Root),
	}
	if err := writeFiles(*out, files, *force, stderr); err != nil {
		return fmt.Errorf("pki agency: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s.pem and %s.key (%s) and %s to %s\n", base, base, certs.AgencyURI(p.Party, *agency), certs.FileBundle, *out)
	return nil
}

// loadPKIDir reads the files of certs.PKI.Files that exist in dir.
func loadPKIDir(dir string) (*certs.PKI, error) {
	names := []string{
		certs.FileRoot, certs.FileRootKey, certs.FileInter, certs.FileInterKey,
		certs.FileSigning, certs.FileSigningKey, certs.FileEncryption, certs.FileEncryptKey,
		certs.FileTLSServer, certs.FileTLSServerKey, certs.FileTLSClient, certs.FileTLSClientKey,
	}
	files := make(map[string][]byte, len(names))
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files[name] = b
	}
	return certs.LoadPKI(files)
}

// errWouldOverwrite is writeFiles' refusal to replace an existing file
// without force.
var errWouldOverwrite = errors.New("refusing to overwrite")

// writeFiles writes files into dir: keys 0600, others 0644, the directory
// 0700 if it is created. Without force it refuses, before writing anything,
// if any file exists. Each file is written to a temporary name and then
// linked (or, with force, renamed) into place, so none is ever half-written.
func writeFiles(dir string, files map[string][]byte, force bool, stderr io.Writer) error {
	if err := ensureDir(dir, stderr); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	if !force {
		var exist []string
		for _, name := range names {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				exist = append(exist, name)
			}
		}
		if len(exist) > 0 {
			return fmt.Errorf("%w %s in %s (use --force)", errWouldOverwrite, strings.Join(exist, ", "), dir)
		}
	}
	for _, name := range names {
		mode := os.FileMode(0o644)
		if certs.IsPrivateKeyFile(name) {
			mode = 0o600
		}
		if err := writeFile(filepath.Join(dir, name), files[name], mode, force); err != nil {
			return err
		}
	}
	return nil
}

func ensureDir(dir string, stderr io.Writer) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		return os.Chmod(dir, 0o700)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case fi.Mode().Perm()&0o077 != 0:
		fmt.Fprintf(stderr, "warning: %s is accessible by other users (mode %v)\n", dir, fi.Mode().Perm())
	}
	return nil
}

func writeFile(path string, data []byte, mode os.FileMode, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful Link/Rename this fails harmlessly or removes the extra name
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if force {
		return os.Rename(tmp.Name(), path)
	}
	return os.Link(tmp.Name(), path) // fails if path exists: never clobber without --force
}

func pkiInspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cmx pki inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("pki inspect: no files")
	}
	var errs []error
	for _, name := range fs.Args() {
		data, err := os.ReadFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		list, err := certs.ParseCertificates(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		for i, c := range list {
			fmt.Fprintf(stdout, "%s [%d]\n", name, i)
			describe(stdout, c)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pki inspect: %w", err)
	}
	return nil
}

func describe(w io.Writer, c *x509.Certificate) {
	line := func(k, v string) { fmt.Fprintf(w, "  %-13s %s\n", k+":", v) }
	line("subject", c.Subject.String())
	line("issuer", c.Issuer.String())
	line("serial", c.SerialNumber.Text(16))
	line("not before", c.NotBefore.UTC().Format(time.RFC3339))
	line("not after", c.NotAfter.UTC().Format(time.RFC3339))
	line("key", keyDesc(c))
	line("CA", caDesc(c))
	line("key usage", keyUsageDesc(c.KeyUsage))
	line("ext key use", extKeyUsageDesc(c))
	line("policies", policyDesc(c.Policies))
	line("SAN URIs", joinOrNone(urisOf(c)))
	line("SAN DNS", joinOrNone(c.DNSNames))
	line("SAN IPs", joinOrNone(ipsOf(c)))
	line("kid", certs.KID(c))
	line("cmx", cmxDesc(c))
}

func cmxDesc(c *x509.Certificate) string {
	if c.IsCA {
		return "CA certificate (no leaf role)"
	}
	role, err := certs.RoleOf(c)
	if err != nil {
		return "no cmx role: " + err.Error()
	}
	party, agency, err := certs.PartyOf(c)
	if err != nil {
		return fmt.Sprintf("role %s, but no party: %v", role, err)
	}
	if agency != "" {
		return fmt.Sprintf("role %s, party %s, agency %s", role, party, agency)
	}
	return fmt.Sprintf("role %s, party %s", role, party)
}

func keyDesc(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", c.PublicKey)
}

func caDesc(c *x509.Certificate) string {
	switch {
	case !c.IsCA:
		return "no"
	case c.MaxPathLen < 0 || (c.MaxPathLen == 0 && !c.MaxPathLenZero):
		return "yes, no path length limit"
	}
	return fmt.Sprintf("yes, max path length %d", c.MaxPathLen)
}

var keyUsageNames = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "digitalSignature"},
	{x509.KeyUsageContentCommitment, "contentCommitment"},
	{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
	{x509.KeyUsageDataEncipherment, "dataEncipherment"},
	{x509.KeyUsageKeyAgreement, "keyAgreement"},
	{x509.KeyUsageCertSign, "keyCertSign"},
	{x509.KeyUsageCRLSign, "cRLSign"},
	{x509.KeyUsageEncipherOnly, "encipherOnly"},
	{x509.KeyUsageDecipherOnly, "decipherOnly"},
}

func keyUsageDesc(ku x509.KeyUsage) string {
	var names []string
	for _, n := range keyUsageNames {
		if ku&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return joinOrNone(names)
}

var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "any",
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

func extKeyUsageDesc(c *x509.Certificate) string {
	var names []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := extKeyUsageNames[u]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("eku(%d)", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return joinOrNone(names)
}

func policyDesc(policies []x509.OID) string {
	var names []string
	for _, p := range policies {
		switch {
		case p.Equal(certs.OIDSigningPolicy):
			names = append(names, p.String()+" (cmx signing)")
		case p.Equal(certs.OIDEncryptionPolicy):
			names = append(names, p.String()+" (cmx encryption)")
		default:
			names = append(names, p.String())
		}
	}
	return joinOrNone(names)
}

func urisOf(c *x509.Certificate) []string {
	out := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		out[i] = u.String()
	}
	return out
}

func ipsOf(c *x509.Certificate) []string {
	out := make([]string, len(c.IPAddresses))
	for i, ip := range c.IPAddresses {
		out[i] = ip.String()
	}
	return out
}

func joinOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
