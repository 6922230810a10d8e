package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// warmTokens (-warm, the default) polls every device once, over
// kept-alive connections from clients workers, before the measured modes:
// then the controller has seen every device, as one that has served its
// fleet for a poll interval has (devices poll every 30 minutes): its
// deployment index caught up, its heap grown to its working size, every
// device's last poll recorded. Without it, a short run at 1,000,000
// devices measures mostly the first poll of a device after a start. The
// pass is measured too (warmResult): the first polls after a start are
// reported as their own row.
//
// With pki.always (-device-ca) the connections present client
// certificates of the test CA, as the devices' do.
// warmResult is what the pass of warmTokens measured.
type warmResult struct {
	polls int
	took  time.Duration
	cpu   time.Duration // gitfleet serve's CPU per poll
}

func (w warmResult) rate() float64 { return float64(w.polls) / w.took.Seconds() }

func warmTokens(ctx context.Context, srv *server, pki *clientPKI, toks *tokens, clients int) (warmResult, error) {
	tr := &http.Transport{TLSClientConfig: deviceTLS(srv.pool, pki), MaxIdleConnsPerHost: clients, ForceAttemptHTTP2: false,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	start := time.Now()
	cpu0 := cpuOf(srv.proc.Process.Pid)
	var next, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(toks.all) {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+srv.addr+"/api/devices/v2/deployments/device/deployments/next", bytes.NewReader(nextBody))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+toks.all[i])
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	w := warmResult{polls: len(toks.all), took: time.Since(start)}
	w.cpu = (cpuOf(srv.proc.Process.Pid) - cpu0) / time.Duration(max(w.polls, 1))
	if err := ctx.Err(); err != nil {
		return w, err
	}
	if n := errs.Load(); n > 0 {
		return w, fmt.Errorf("first polls: %d of %d failed, the first: %v", n, len(toks.all), firstErr.Load())
	}
	fmt.Printf("every device polled once (the controller has seen every device) in %s: %.0f polls/s, gitfleet serve CPU %s per poll\n",
		w.took.Round(time.Millisecond), w.rate(), fmtDur(w.cpu))
	return w, nil
}
