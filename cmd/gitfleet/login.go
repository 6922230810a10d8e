package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/operators"
)

func newLoginCmd() *cobra.Command {
	var (
		server, tokenFile, caCert, path string
		force                           bool
		sshKey, operator, menderToken   string
	)
	cmd := &cobra.Command{
		Use:   "login --server URL --token-file FILE [--ca-cert FILE] | login --ssh-key FILE --operator NAME",
		Short: "Save a connection to the controller, or log an operator in with an SSH key",
		Long: `The commands that talk to the controller's management API (status, rollouts,
devices, alerts, events, audit, config status, reconcile) need three settings,
each read from the first place that sets it:

  1. the flags --server, --token and --ca-cert;
  2. the environment variables GITFLEET_SERVER, GITFLEET_TOKEN and
     GITFLEET_CA_CERT;
  3. the CLI configuration file: --cli-config FILE, else GITFLEET_CONFIG,
     else $XDG_CONFIG_HOME/gitfleet/cli.yaml (~/.config/gitfleet/cli.yaml).

The configuration file is YAML with the keys server, token or tokenFile (a
file holding the token), and caCert; relative paths are relative to the
file. Any other key is an error.

  server: https://gitfleet.example.com:8443
  tokenFile: /etc/gitfleet/management-token
  caCert: /etc/gitfleet/ca.pem

--server is the controller's URL (https only). --token is the controller's
--management-token. --ca-cert is the PEM certificate of the CA that signed
the controller's certificate, or the controller's own self-signed certificate
(gitfleet serve logs its path and SHA-256 fingerprint when it makes one);
without it the system's CAs are trusted.

login checks that the controller answers with these settings, then writes the
configuration file (mode 0600), referring to the token file rather than
copying the token. It does not overwrite an existing file without --force.

Operators (Operator manifests, for mender-cli terminal, cp and
port-forward) log in with an SSH key instead: login --ssh-key FILE
--operator NAME asks the controller for a fresh challenge, signs it with the
private key in FILE (the Operator's sshPublicKey must be its public half; an
encrypted key's passphrase is read from GITFLEET_SSH_PASSPHRASE), and writes
the session token it gets where mender-cli reads its token
($XDG_CACHE_HOME/mender/authtoken, else ~/.cache/mender/authtoken; or
--mender-token FILE), and prints it. The server and CA come from --server
and --ca-cert, or GITFLEET_SERVER, GITFLEET_CA_CERT, or the CLI
configuration file; no management token is needed. Then:
mender-cli --server URL terminal DEVICE_ID.`,
		Example: `  gitfleet login --server https://127.0.0.1:8443 --token-file ./token --ca-cert .gitfleet/dev-tls.crt
  gitfleet status
  gitfleet login --server https://gitfleet.example.com --ssh-key ~/.ssh/id_ed25519 --operator alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sshKey != "" || operator != "" {
				if tokenFile != "" {
					return errors.New("--ssh-key logs an operator in; --token-file saves the management connection: give one or the other")
				}
				if sshKey == "" || operator == "" {
					return errors.New("an SSH login needs --ssh-key FILE (your private key) and --operator NAME (your Operator manifest's name)")
				}
				mc := mgmtClient{server: server, caCert: caCert, configFile: path}
				return sshLogin(cmd, &mc, sshKey, operator, menderToken)
			}
			if server == "" || tokenFile == "" {
				return errors.New("login needs --server URL and --token-file FILE (a file holding the controller's --management-token)")
			}
			if path == "" {
				path = os.Getenv("GITFLEET_CONFIG")
			}
			if path == "" {
				if path = defaultConfigPath(); path == "" {
					return errors.New("no home directory: give --cli-config FILE")
				}
			}
			abs := func(p string) (string, error) {
				if p == "" {
					return "", nil
				}
				return filepath.Abs(p)
			}
			var err error
			if tokenFile, err = abs(tokenFile); err != nil {
				return err
			}
			if caCert, err = abs(caCert); err != nil {
				return err
			}
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--token-file: %w", err)
			}
			mc := mgmtClient{resolved: &connection{server: server, serverFrom: "--server", token: string(trimSpace(tok)), tokenFrom: "--token-file",
				caCert: caCert, caFrom: "--ca-cert"}}
			if _, err := parseServer(mc.resolved); err != nil {
				return err
			}
			var st controller.Status
			if err := mc.get(cmd.Context(), "/api/management/v1/status", &st); err != nil {
				return failed(err)
			}
			doc := map[string]string{"server": server, "tokenFile": tokenFile}
			if caCert != "" {
				doc["caCert"] = caCert
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return failed(err)
			}
			f, err := os.OpenFile(path, flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return failed(fmt.Errorf("%s exists: pass --force to replace it, or --cli-config another file", path))
			}
			if err != nil {
				return failed(err)
			}
			for _, k := range []string{"server", "tokenFile", "caCert"} {
				if v, ok := doc[k]; ok {
					b, _ := json.Marshal(v) // a JSON string is a YAML double-quoted scalar
					fmt.Fprintf(f, "%s: %s\n", k, b)
				}
			}
			if err := f.Close(); err != nil {
				return failed(err)
			}
			serving := "no commit yet"
			if st.Serving != nil {
				serving = shortSHA(st.Serving.SHA)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "connected to %s (replica %s, serving %s); wrote %s\n", shownURL(server), st.Replica, serving, path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "controller URL, https://HOST:PORT")
	f.StringVar(&tokenFile, "token-file", "", "file holding the management token")
	f.StringVar(&caCert, "ca-cert", "", "PEM file of the CA or self-signed certificate to trust")
	f.StringVar(&path, "cli-config", "", "configuration file to write (default $XDG_CONFIG_HOME/gitfleet/cli.yaml)")
	f.BoolVar(&force, "force", false, "replace an existing configuration file")
	f.StringVar(&sshKey, "ssh-key", "", "log an operator in with this SSH private key")
	f.StringVar(&operator, "operator", "", "the Operator manifest's name, with --ssh-key")
	f.StringVar(&menderToken, "mender-token", "", "where to write the session token (default mender-cli's: $XDG_CACHE_HOME/mender/authtoken)")
	return cmd
}

// sshLogin logs an operator in with an SSH key: a challenge from the
// controller, signed, exchanged for a session token, which is written
// where mender-cli reads it and printed.
func sshLogin(cmd *cobra.Command, mc *mgmtClient, keyFile, operator, tokenPath string) error {
	signer, err := readSSHSigner(keyFile)
	if err != nil {
		return err
	}
	if tokenPath == "" {
		if tokenPath, err = menderTokenPath(); err != nil {
			return err
		}
	}
	ctx := cmd.Context()
	var ch operators.Challenge
	if err := mc.postJSON(ctx, operators.ChallengePath, map[string]string{"operator": operator}, &ch); err != nil {
		return failed(err)
	}
	sig, err := signSSH(signer, operators.SignedData(ch.Challenge))
	if err != nil {
		return failed(fmt.Errorf("sign the challenge with %s: %w", keyFile, err))
	}
	var s operators.Session
	req := operators.SSHLogin{Operator: operator, Challenge: ch.Challenge, Signature: base64.StdEncoding.EncodeToString(ssh.Marshal(sig))}
	if err := mc.postJSON(ctx, operators.SSHLoginPath, req, &s); err != nil {
		return failed(err)
	}
	if err := os.MkdirAll(filepath.Dir(tokenPath), 0o700); err != nil {
		return failed(err)
	}
	if err := os.WriteFile(tokenPath, []byte(s.Token), 0o600); err != nil {
		return failed(err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), s.Token)
	fmt.Fprintf(cmd.ErrOrStderr(), "logged in as operator %s with %s (%s); the session token, valid until %s, is in %s (mender-cli's token file)\n",
		s.Operator, keyFile, ssh.FingerprintSHA256(signer.PublicKey()), s.Expires.UTC().Format(time.RFC3339), tokenPath)
	return nil
}

// readSSHSigner reads an SSH private key (OpenSSH, PEM); an encrypted one
// is opened with GITFLEET_SSH_PASSPHRASE.
func readSSHSigner(file string) (ssh.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--ssh-key: %w", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("ssh-")) || bytes.HasPrefix(bytes.TrimSpace(b), []byte("ecdsa-")) {
		return nil, fmt.Errorf("--ssh-key %s is a public key: give the private key (the file without .pub)", file)
	}
	signer, err := ssh.ParsePrivateKey(b)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		pass := os.Getenv("GITFLEET_SSH_PASSPHRASE")
		if pass == "" {
			return nil, fmt.Errorf("--ssh-key %s is encrypted: set GITFLEET_SSH_PASSPHRASE to its passphrase", file)
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(b, []byte(pass))
	}
	if err != nil {
		return nil, fmt.Errorf("--ssh-key %s: %w", file, err)
	}
	return signer, nil
}

// signSSH signs data, with SHA-256 for an RSA key.
func signSSH(s ssh.Signer, data []byte) (*ssh.Signature, error) {
	if as, ok := s.(ssh.AlgorithmSigner); ok && s.PublicKey().Type() == ssh.KeyAlgoRSA {
		return as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA256)
	}
	return s.Sign(rand.Reader, data)
}

// menderTokenPath is where mender-cli 1.9 reads its token:
// $XDG_CACHE_HOME/mender/authtoken, else ~/.cache/mender/authtoken.
func menderTokenPath() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "mender", "authtoken"), nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("no home directory: give --mender-token FILE")
	}
	return filepath.Join(h, ".cache", "mender", "authtoken"), nil
}
