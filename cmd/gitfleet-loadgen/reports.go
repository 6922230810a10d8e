package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// reportStates are the status reports of a deployment that succeeds, as
// the Mender client sends them after downloading.
var reportStates = []string{"installing", "rebooting", "success"}

// reportCost is what the in-flight devices' status reports cost.
type reportCost struct {
	n    int
	cpu  time.Duration // gitfleet serve's CPU per report
	cmds string        // Redis commands per report
	rate float64
}

// measureReports lets every in-flight device finish its deployment: a
// poll for its deployment ID, then the reports of reportStates, from 8
// clients over kept-alive connections. The CPU gitfleet serve spends
// meanwhile, polls included (one per device), over the reports is the
// per-report cost. With pki.always (-device-ca) the connections present
// client certificates of the test CA.
func measureReports(ctx context.Context, srv *server, pki *clientPKI, redisAddr string, toks *tokens, idx []int) (reportCost, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: deviceTLS(srv.pool, pki), MaxIdleConnsPerHost: 8}}
	base := "https://" + srv.addr
	before, _ := commandStats(ctx, redisAddr)
	cpu0 := cpuOf(srv.proc.Process.Pid)
	start := time.Now()
	work := make(chan int)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := finish(ctx, client, base, toks.all[i]); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for _, i := range idx {
		work <- i
	}
	close(work)
	wg.Wait()
	if first != nil {
		return reportCost{}, first
	}
	took := time.Since(start)
	after, _ := commandStats(ctx, redisAddr)
	n := len(idx) * len(reportStates)
	c := reportCost{n: n, cpu: (cpuOf(srv.proc.Process.Pid) - cpu0) / time.Duration(max(n, 1)),
		cmds: perPollStats(before, after, int64(n)), rate: float64(n) / took.Seconds()}
	fmt.Printf("  %d status reports of %d devices: gitfleet serve CPU %s per report (a poll each included), Redis per report: %s\n",
		n, len(idx), fmtDur(c.cpu), c.cmds)
	return c, nil
}

// finish polls for the device's deployment and reports it through to
// success.
func finish(ctx context.Context, c *http.Client, base, tok string) error {
	code, body, err := poll(ctx, c, base, tok)
	if err != nil {
		return err
	}
	var d struct {
		ID string `json:"id"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &d) != nil || d.ID == "" {
		return fmt.Errorf("an in-flight device's poll: %d %s", code, body)
	}
	for _, st := range reportStates {
		b, _ := json.Marshal(map[string]string{"status": st})
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/api/devices/v1/deployments/device/deployments/"+d.ID+"/status", bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status report %s: %s %s", st, resp.Status, msg)
		}
	}
	return nil
}
