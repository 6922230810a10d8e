package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
)

func newLoginCmd() *cobra.Command {
	var (
		server, tokenFile, caCert, path string
		force                           bool
	)
	cmd := &cobra.Command{
		Use:   "login --server URL --token-file FILE [--ca-cert FILE]",
		Short: "Check a connection to the controller and save it in the CLI configuration file",
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
copying the token. It does not overwrite an existing file without --force.`,
		Example: `  gitfleet login --server https://127.0.0.1:8443 --token-file ./token --ca-cert .gitfleet/dev-tls.crt
  gitfleet status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
	return cmd
}
