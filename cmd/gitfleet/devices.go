package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller/store"
)

func newDevicesCmd() *cobra.Command {
	var mc mgmtClient
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List declared and pending devices and print the manifest that accepts one",
		Long: `'gitfleet devices' (or 'gitfleet devices list') lists the devices the served
commit declares: status, last seen, artifact and open alerts.

Devices that authenticate without being declared in the fleet repository are
recorded as pending and refused. 'gitfleet devices pending' lists them;
'gitfleet devices accept ID' prints the Device manifest that accepts one (its
identity and key fingerprint), or writes it into a checkout of the fleet
repository with --write. Accepting a device is a commit: review it, merge it,
and the device is accepted at its next authentication. For a device admitted
by trust on first use, 'accept' prints the key the controller bound, as the
publicKeySHA256 line to commit. 'gitfleet devices conflicts' lists signed
requests that came with another key than the one bound to their device.

All talk to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
	}
	var o deviceListOptions
	o.flags(cmd)
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return listDevices(cmd, &mc, o) }
	mc.flags(cmd.PersistentFlags())
	cmd.AddCommand(newDevicesListCmd(&mc), newDevicesPendingCmd(&mc), newDevicesAcceptCmd(&mc), newDevicesConflictsCmd(&mc))
	return cmd
}

func newDevicesPendingCmd(mc *mgmtClient) *cobra.Command {
	var (
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "List devices waiting to be accepted, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := listing(cmd, mc, "/api/management/v1/devices/pending?limit="+fmt.Sprint(limit), "devices", asJSON,
				"no pending devices", "ID\tLAST SEEN\tKEY SHA256\tIDENTITY", func(d store.Device) string {
					key := d.KeyFingerprint
					if len(key) > 16 {
						key = key[:16] + "…"
					}
					return fmt.Sprintf("%s\t%s\t%s\t%s", d.ID, d.LastSeen.UTC().Format(time.RFC3339), key, d.Identity)
				})
			if err == nil && n > 0 && !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "accept one with: gitfleet devices accept ID [--write CHECKOUT]")
			}
			return err
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many (1…1000)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the store's records as JSON")
	return cmd
}

func newDevicesAcceptCmd(mc *mgmtClient) *cobra.Command {
	var (
		name, deviceType, dir string
		force                 bool
	)
	cmd := &cobra.Command{
		Use:   "accept ID [--name NAME] [--write CHECKOUT]",
		Short: "Print (or write) the Device manifest that accepts a pending device",
		Long: `Print the Device manifest that accepts the device with this ID (from
'gitfleet devices pending'): its identity and the SHA-256 fingerprint of its
public key, so that only that device with that key is accepted.

With --write CHECKOUT the manifest is written to CHECKOUT/devices/NAME.yaml
instead; commit it (and open a pull request) to accept the device.

NAME defaults to one derived from the device's hostname, serial or MAC
identity attribute, else "device-" and the ID's first 12 characters. It is
how groups and rollouts refer to the device.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			var d store.Device
			if err := mc.get(cmd.Context(), "/api/management/v1/devices/"+url.PathEscape(id), &d); err != nil {
				return failed(err)
			}
			identity := map[string]string{}
			if len(d.Identity) > 0 {
				if err := json.Unmarshal(d.Identity, &identity); err != nil {
					return failed(fmt.Errorf("device %s: identity %s has values that are not strings, which no Device manifest identity matches: accept it by its key alone (publicKeySHA256: %s), or make its identity script print each attribute once", id, d.Identity, d.KeyFingerprint))
				}
			}
			var conflicts struct {
				Conflicts []store.Conflict `json:"conflicts"`
			}
			if err := mc.get(cmd.Context(), "/api/management/v1/devices/conflicts?limit=1000", &conflicts); err != nil {
				return failed(err)
			}
			for _, c := range conflicts.Conflicts {
				if c.ID == id {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: device %s: another key (%s) claimed this identity %d times (last %s); the manifest names the key the controller holds for it (%s). Check which one is the device's before you commit.\n",
						id, c.KeyFingerprint, c.Count, c.LastSeen.UTC().Format(time.RFC3339), c.BoundKey)
				}
			}
			if name == "" {
				name = deviceName(id, identity)
			}
			if !manifestName.MatchString(name) {
				return fmt.Errorf("--name %q: use letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 128 characters", name)
			}
			if d.Status == store.DeviceAccepted {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: device %s is already accepted by the served commit\n", id)
			}
			doc := deviceManifest(name, id, deviceType, identity, d)
			if dir == "" {
				_, err := io.WriteString(cmd.OutOrStdout(), doc)
				return err
			}
			path := filepath.Join(dir, "devices", name+".yaml")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return failed(err)
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(path, flags, 0o644)
			if errors.Is(err, os.ErrExist) {
				return failed(fmt.Errorf("%s already exists: choose another --name, or pass --force to replace it", path))
			}
			if err != nil {
				return failed(err)
			}
			if _, err := io.WriteString(f, doc); err != nil {
				f.Close()
				return failed(err)
			}
			if err := f.Close(); err != nil {
				return failed(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; commit it to accept the device:\n  git -C %s add %s && git -C %s commit -m 'Accept device %s'\n",
				path, dir, filepath.Join("devices", name+".yaml"), dir, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "metadata.name of the Device manifest")
	cmd.Flags().StringVar(&deviceType, "device-type", "", "also require the device to report this device type")
	cmd.Flags().StringVar(&dir, "write", "", "write the manifest into this checkout of the fleet repository (devices/NAME.yaml)")
	cmd.Flags().BoolVar(&force, "force", false, "with --write, replace an existing file")
	return cmd
}

func newDevicesConflictsCmd(mc *mgmtClient) *cobra.Command {
	var (
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "conflicts",
		Short: "List signed requests whose key is not the one bound to their device",
		Long: `A device's key is bound: by the publicKeySHA256 its manifest names, or by the
first key the controller recorded for it. A signed auth request with the same
identity and another key is refused and listed here with both fingerprints:
someone else claiming the device, or the device with a new key. If the new key
is the device's, commit its publicKeySHA256 in the device's manifest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := listing(cmd, mc, "/api/management/v1/devices/conflicts?limit="+fmt.Sprint(limit), "conflicts", asJSON,
				"no key conflicts", "ID\tLAST SEEN\tCOUNT\tREFUSED KEY SHA256\tBOUND KEY SHA256\tIDENTITY", func(c store.Conflict) string {
					return fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s", c.ID, c.LastSeen.UTC().Format(time.RFC3339), c.Count, c.KeyFingerprint, c.BoundKey, c.Identity)
				})
			return err
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many (1…1000)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the store's records as JSON")
	return cmd
}

// manifestName is the schema's #Name.
var manifestName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$`)

// deviceName derives a manifest name from the identity attributes people
// recognize, falling back to the ID.
func deviceName(id string, identity map[string]string) string {
	bad := regexp.MustCompile(`[^A-Za-z0-9._-]+`)
	for _, k := range []string{"hostname", "serial", "serial_number", "serialno", "mac"} {
		v := strings.Trim(bad.ReplaceAllString(identity[k], "-"), "-._")
		if k == "mac" {
			v = strings.ToLower(v)
		}
		if v != "" && len(v) <= 120 {
			if k == "mac" {
				v = "mac-" + v
			}
			if manifestName.MatchString(v) {
				return v
			}
		}
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return "device-" + id
}

// deviceManifest renders a Device manifest. Strings are written as JSON
// strings, which YAML reads as double-quoted scalars, so any value is
// quoted safely.
func deviceManifest(name, id, deviceType string, identity map[string]string, d store.Device) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var b strings.Builder
	fmt.Fprintf(&b, "# Accepted with `gitfleet devices accept %s`; first seen %s.\n", id, d.FirstSeen.UTC().Format(time.RFC3339))
	b.WriteString("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\nspec:\n", q(name))
	if len(identity) > 0 {
		b.WriteString("  identity:\n")
		keys := make([]string, 0, len(identity))
		for k := range identity {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %s: %s\n", q(k), q(identity[k]))
		}
	}
	if d.KeyFingerprint != "" {
		fmt.Fprintf(&b, "  publicKeySHA256: %s\n", d.KeyFingerprint)
	}
	if deviceType != "" {
		fmt.Fprintf(&b, "  deviceType: %s\n", q(deviceType))
	}
	return b.String()
}
