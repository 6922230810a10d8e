package controller

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/controller/notifier"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/labstack/echo/v5"
)

// newRemote builds the remote terminal relay over the operator access
// (c.operators, the live commit's Operator manifests) and the store's
// remote sessions. A store that does not keep them (store.RemoteSessions)
// leaves the relay off; why is kept for the answer its endpoints give.
func (c *Controller) newRemote() error {
	rs, ok := c.opts.Store.(store.RemoteSessions)
	switch {
	case c.operators == nil:
		c.remoteOff = "remote terminal, file transfer and port forwarding are off: this controller has no operator access"
		return nil
	case !ok:
		c.remoteOff = "remote terminal, file transfer and port forwarding are off: the configured store does not keep remote sessions; upgrade the controller"
		return nil
	}
	events := notifier.EventLog(c.opts.Store, c.notify)
	r, err := deviceconnect.New(deviceconnect.Options{
		Sessions:   rs,
		Authorizer: c.operators,
		Replica:    c.opts.ReplicaID,
		Logger:     c.log.With("component", "deviceconnect"),
		// session.started, .ended and .refused go to the event log,
		// which notifies.
		Source: func(r *http.Request) string {
			if a := c.opts.Devices.Clients.Addr(r); a.IsValid() {
				return a.String()
			}
			return r.RemoteAddr
		},
		Events: func(ctx context.Context, e store.Event) {
			if _, _, err := events.AppendEvent(ctx, e); err != nil {
				c.log.Error("record event failed", "kind", e.Kind, "subject", e.Subject, "err", err)
			}
		},
	})
	if err != nil {
		return err
	}
	c.remote = r
	return nil
}

// runRemote re-checks open remote sessions when operator access changes,
// until ctx ends.
func (c *Controller) runRemote(ctx context.Context, wg *sync.WaitGroup) {
	if c.remote == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.remote.Run(ctx)
	}()
}

// Remote returns the relay of remote sessions, nil when it is off.
func (c *Controller) Remote() *deviceconnect.Relay { return c.remote }

// registerRemote adds Mender's deviceconnect routes:
//
//	GET /api/devices/v1/deviceconnect/connect                     the device's websocket (device token)
//	GET /api/management/v1/deviceconnect/devices/:id              the device's connection status
//	GET /api/management/v1/deviceconnect/devices/:id/connect      an operator's session websocket
//	GET /api/management/v1/deviceconnect/devices/:id/download     ?path=: a file from the device
//	PUT /api/management/v1/deviceconnect/devices/:id/upload       multipart path, file: a file to the device
//
// The management routes authenticate operators with their own tokens
// (package operators), not with the management token. When the relay
// is off they all answer 501 saying why.
func (c *Controller) registerRemote(e *echo.Echo) {
	p := deviceconnect.ManagementPrefix
	if c.remote == nil {
		off := func(*echo.Context) error { return echo.NewHTTPError(http.StatusNotImplemented, c.remoteOff) }
		e.GET(deviceconnect.DevicePath, off)
		e.Any(p+"/*", off)
		return
	}
	e.GET(deviceconnect.DevicePath, func(ctx *echo.Context) error {
		id, ok := deviceapi.AuthenticatedDevice(ctx)
		if !ok {
			return errors.New("deviceconnect: no authenticated device")
		}
		c.remote.ServeDevice(ctx.Response(), ctx.Request(), id)
		return nil
	}, c.devices.Authenticated)
	wrap := func(h http.HandlerFunc) echo.HandlerFunc { return echo.WrapHandler(h) }
	e.GET(p+"/devices/:id", wrap(c.remote.DeviceStatus))
	e.GET(p+"/devices/:id/connect", wrap(c.remote.Connect))
	e.GET(p+"/devices/:id/download", wrap(c.remote.Download))
	e.PUT(p+"/devices/:id/upload", wrap(c.remote.Upload))
}
