package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/webhooks/receive"
)

func newWebhookCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Announce a push to a controller (for Git hooks and CI jobs)",
	}
	cmd.AddCommand(newWebhookSendCmd())
	return cmd
}

func newWebhookSendCmd() *cobra.Command {
	var (
		target, secretFile, caCert, ref, after, repository string
	)
	cmd := &cobra.Command{
		Use:   "send --url https://CONTROLLER/hooks/generic --secret-file FILE [--ref refs/heads/main]",
		Short: "Send a signed push notification (the generic webhook) so the controller fetches now",
		Long: `Send the controller's generic webhook: a JSON push notification signed with
the webhook secret (HMAC-SHA256 over a timestamp, a unique delivery ID and the
body), so the controller fetches the fleet repository at once instead of at its
next poll. Use it from a Git post-receive or post-commit hook, or from a CI job
after a merge, where the Git host itself cannot reach the controller.

The secret is read from --secret-file or GITFLEET_WEBHOOK_SECRET (never from a
flag: command lines are visible to other users).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := url.Parse(target)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				return fmt.Errorf("--url %q: want the controller's https:// webhook URL, e.g. https://gitfleet.example.com/hooks/generic", target)
			}
			secret := os.Getenv("GITFLEET_WEBHOOK_SECRET")
			if secretFile != "" {
				b, err := os.ReadFile(secretFile)
				if err != nil {
					return fmt.Errorf("--secret-file: %w", err)
				}
				secret = strings.TrimSpace(string(b))
			}
			if secret == "" {
				return fmt.Errorf("no webhook secret: give --secret-file (the file the controller's --webhook-secret-file names) or GITFLEET_WEBHOOK_SECRET")
			}
			if !strings.HasPrefix(ref, "refs/") {
				return fmt.Errorf("--ref %q: want a full ref name, e.g. refs/heads/main", ref)
			}
			tlsCfg, err := (&connection{caCert: caCert, caFrom: "--ca-cert"}).tlsConfig()
			if err != nil {
				return err
			}
			payload := map[string]string{"ref": ref}
			if after != "" {
				payload["after"] = after
			}
			if repository != "" {
				payload["repository"] = repository
			}
			body, _ := json.Marshal(payload)
			var idb [12]byte
			_, _ = rand.Read(idb[:])
			id := "cli-" + hex.EncodeToString(idb[:])
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, u.String(), bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Gitfleet-Event", "push")
			req.Header.Set("X-Gitfleet-Timestamp", ts)
			req.Header.Set("X-Gitfleet-Delivery", id)
			req.Header.Set("X-Gitfleet-Signature", receive.SignGeneric(receive.Secret(secret), ts, id, body))
			client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("webhook: %w", err)
			}
			defer resp.Body.Close()
			rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			var out struct {
				Status string `json:"status"`
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(rb, &out)
			if resp.StatusCode/100 != 2 {
				hint := ""
				if resp.StatusCode == http.StatusUnauthorized {
					hint = " (is the secret the controller's --webhook-secret, and this machine's clock right?)"
				}
				return fmt.Errorf("webhook: %s: %d %s%s", u.Path, resp.StatusCode, orDash(strings.TrimSpace(out.Status+" "+out.Reason)), hint)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "webhook: %s %s\n", out.Status, out.Reason)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "url", "", "the controller's webhook URL, e.g. https://gitfleet.example.com/hooks/generic")
	f.StringVar(&secretFile, "secret-file", "", "file holding the webhook secret (or env GITFLEET_WEBHOOK_SECRET)")
	f.StringVar(&caCert, "ca-cert", os.Getenv("GITFLEET_CA_CERT"), "PEM file of the CA (or self-signed certificate) to trust for --url (env GITFLEET_CA_CERT)")
	f.StringVar(&ref, "ref", "refs/heads/main", "the ref that was pushed")
	f.StringVar(&after, "after", "", "the commit the ref now points at (optional)")
	f.StringVar(&repository, "repository", "", "the repository's full name, e.g. org/fleet (optional; when given it must be one the controller tracks)")
	return cmd
}
