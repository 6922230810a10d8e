package main

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
)

// listedDevice is one row of gitfleet devices list.
type listedDevice struct {
	Name       string            `json:"name"`
	ID         string            `json:"id,omitempty"`
	Identity   map[string]string `json:"identity,omitempty"`
	DeviceType string            `json:"device_type,omitempty"`
	Source     string            `json:"source"`
	Status     string            `json:"status"` // accepted, pending, or never-seen
	FirstSeen  *time.Time        `json:"first_seen,omitempty"`
	LastSeen   *time.Time        `json:"last_seen,omitempty"`
	Artifact   string            `json:"artifact,omitempty"`
	OpenAlerts int               `json:"open_alerts"`
}

// deviceListOptions are the flags of gitfleet devices [list].
type deviceListOptions struct {
	limit  int
	asJSON bool
}

func (o *deviceListOptions) flags(cmd *cobra.Command) {
	cmd.Flags().IntVar(&o.limit, "limit", 100, "list at most this many devices, by name (1…1000)")
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print the devices as JSON")
}

func newDevicesListCmd(mc *mgmtClient) *cobra.Command {
	var o deviceListOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the devices the served commit declares, with status, last seen, artifact and open alerts",
		Long: `List the devices the commit the controller serves declares, by name: the ID
the device API derives from the identity in the manifest, whether the device
authenticated (accepted, pending, never-seen), when it was last seen, the
artifact it last reported (artifact_name) and how many open alerts it has.
SOURCE is where the manifest is declared.

Devices declared by their key alone (no identity) are listed without an ID
and as never-seen: their record cannot be found by name. 'gitfleet devices'
without a subcommand is the same.`,
		Example: `  gitfleet devices
  gitfleet devices list --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return listDevices(cmd, mc, o) },
	}
	o.flags(cmd)
	return cmd
}

// maxDeviceLookups is how many device records are read at once.
const maxDeviceLookups = 8

func listDevices(cmd *cobra.Command, mc *mgmtClient, o deviceListOptions) error {
	if o.limit < 1 || o.limit > store.MaxPage {
		return fmt.Errorf("--limit %d: want 1…%d", o.limit, store.MaxPage)
	}
	ctx := cmd.Context()
	var declared struct {
		Commit  string         `json:"commit"`
		Devices []listedDevice `json:"devices"`
	}
	if err := mc.get(ctx, "/api/management/v1/devices", &declared); err != nil {
		return failed(err)
	}
	devs := declared.Devices
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	if len(devs) > o.limit {
		fmt.Fprintf(cmd.ErrOrStderr(), "showing the first %d of %d devices (--limit)\n", o.limit, len(devs))
		devs = devs[:o.limit]
	}
	var alerts struct {
		Alerts []store.Alert `json:"alerts"`
	}
	if err := mc.get(ctx, "/api/management/v1/alerts?"+url.Values{"state": {store.AlertOpen}, "limit": {strconv.Itoa(store.MaxPage)}}.Encode(), &alerts); err != nil {
		return failed(err)
	}
	open := map[string]int{}
	for _, a := range alerts.Alerts {
		open[a.Device]++
	}
	if err := lookupDevices(ctx, mc, devs); err != nil {
		return failed(err)
	}
	for i := range devs {
		devs[i].OpenAlerts = open[devs[i].Name]
	}
	if o.asJSON {
		if devs == nil {
			devs = []listedDevice{}
		}
		return printJSON(cmd, devs)
	}
	if len(devs) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "the commit the controller serves declares no devices")
		return nil
	}
	now := time.Now()
	tw := newTable(cmd)
	fmt.Fprintln(tw, "DEVICE\tID\tSTATUS\tLAST SEEN\tARTIFACT\tOPEN ALERTS\tSOURCE")
	for _, d := range devs {
		seen := "-"
		if d.LastSeen != nil {
			seen = since(*d.LastSeen, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", cell(d.Name, 64), orDash(d.ID), d.Status, seen, orDash(cell(d.Artifact, 64)),
			d.OpenAlerts, cell(d.Source, 64))
	}
	return tw.Flush()
}

// lookupDevices fills in what the store knows of each device, a few
// requests at a time.
func lookupDevices(ctx context.Context, mc *mgmtClient, devs []listedDevice) error {
	if _, err := mc.resolve(); err != nil {
		return err
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, maxDeviceLookups)
	)
	for i := range devs {
		d := &devs[i]
		d.Status = "never-seen"
		if len(d.Identity) == 0 {
			continue
		}
		d.ID = deviceapi.DeviceID(deviceapi.Attributes(d.Identity))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var rec store.Device
			err := mc.get(ctx, "/api/management/v1/devices/"+url.PathEscape(d.ID), &rec)
			if is404(err) {
				return
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			d.Status = string(rec.Status)
			if !rec.FirstSeen.IsZero() {
				t := rec.FirstSeen.UTC()
				d.FirstSeen = &t
			}
			if !rec.LastSeen.IsZero() {
				t := rec.LastSeen.UTC()
				d.LastSeen = &t
			}
			d.Artifact = deviceapi.InventoryAttributes(rec.Inventory)["artifact_name"]
		}()
	}
	wg.Wait()
	return firstErr
}
