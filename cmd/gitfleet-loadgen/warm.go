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

// warmTokens (-warm-tokens) polls every device once, over kept-alive
// connections from clients workers, before the measured modes: then the
// controller has seen every token, as it has in a fleet that has been
// polling for a while (devices keep a token for a week and poll every 30
// minutes), instead of the first poll of nearly every device that a short
// run at 1,000,000 devices otherwise measures.
//
// With pki.always (-device-ca) the connections present client
// certificates of the test CA, as the devices' do.
func warmTokens(ctx context.Context, srv *server, pki *clientPKI, toks *tokens, clients int) error {
	tr := &http.Transport{TLSClientConfig: deviceTLS(srv.pool, pki), MaxIdleConnsPerHost: clients, ForceAttemptHTTP2: false,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	start := time.Now()
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
	if err := ctx.Err(); err != nil {
		return err
	}
	if n := errs.Load(); n > 0 {
		return fmt.Errorf("warming the tokens: %d of %d polls failed, the first: %v", n, len(toks.all), firstErr.Load())
	}
	fmt.Printf("every device polled once (the controller has seen every token) in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
