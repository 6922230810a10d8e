package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gitfleet/gitfleet/device/devconfig"
)

// ConfigServer is the controller's device configuration API (the contract
// of device/devconfig), reached with the device's token like the
// deployment API. Client implements it.
type ConfigServer interface {
	// DeviceConfig fetches the configuration the device should run. etag
	// is the ETag of the last answer kept ("" for none); when the
	// configuration has not changed since, the answer is NotModified
	// (HTTP 304).
	DeviceConfig(ctx context.Context, etag string) (*ConfigAnswer, error)
	// SendConfigStatus reports the outcome of an apply, or a drift.
	SendConfigStatus(ctx context.Context, st devconfig.Status) error
	// ReportConfig reports the configuration the device runs (Mender's
	// PUT /api/devices/v1/deviceconfig/configuration).
	ReportConfig(ctx context.Context, values map[string]string) error
}

// ConfigAnswer is the answer to a configuration fetch.
type ConfigAnswer struct {
	// NotModified: the configuration is that of the ETag sent; nothing
	// else is set but ETag.
	NotModified bool
	// ETag identifies the configuration; send it with the next fetch.
	ETag string
	// Config is the configuration, its digest verified.
	Config devconfig.Configuration
}

var _ ConfigServer = (*Client)(nil)

// DeviceConfig implements ConfigServer: GET devconfig.ConfigPath, with
// If-None-Match when etag is set. An answer whose digest does not match
// its values, or that is larger than devconfig.MaxBody or has more than
// devconfig.MaxKeys keys, is refused (ErrRejected).
func (c *Client) DeviceConfig(ctx context.Context, etag string) (*ConfigAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var hdr http.Header
	if etag != "" {
		hdr = http.Header{"If-None-Match": {etag}}
	}
	resp, err := c.callWith(ctx, http.MethodGet, devconfig.ConfigPath, nil, hdr)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusNotModified {
		return &ConfigAnswer{NotModified: true, ETag: etag}, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, devconfig.MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: device configuration: %v", ErrServer, err)
	}
	if len(b) > devconfig.MaxBody {
		return nil, fmt.Errorf("%w: device configuration: answer larger than %d bytes", ErrRejected, devconfig.MaxBody)
	}
	cfg, err := DecodeConfiguration(b)
	if err != nil {
		return nil, fmt.Errorf("%w: device configuration: %v", ErrRejected, err)
	}
	tag := resp.Header.Get("ETag")
	if tag == "" {
		tag = `"` + cfg.Digest + `"`
	}
	return &ConfigAnswer{ETag: tag, Config: cfg}, nil
}

// DecodeConfiguration decodes a devconfig.Configuration and checks it: at
// most devconfig.MaxKeys values, and a digest that is the digest of its
// values. A missing "configuration" is the empty configuration.
func DecodeConfiguration(b []byte) (devconfig.Configuration, error) {
	var cfg devconfig.Configuration
	if err := json.Unmarshal(b, &cfg); err != nil {
		// The values may be secrets: say where, not what.
		return devconfig.Configuration{}, errors.New(`not a configuration object (want {"digest": "sha256:…", "configuration": {NAME: STRING, …}})`)
	}
	if cfg.Values == nil {
		cfg.Values = map[string]string{}
	}
	if err := cfg.Verify(); err != nil {
		return devconfig.Configuration{}, err
	}
	return cfg, nil
}

// SendConfigStatus implements ConfigServer: PUT devconfig.StatusPath.
func (c *Client) SendConfigStatus(ctx context.Context, st devconfig.Status) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := c.call(ctx, http.MethodPut, devconfig.StatusPath, st)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// ReportConfig implements ConfigServer: PUT devconfig.ReportPath with the
// values as a JSON object.
func (c *Client) ReportConfig(ctx context.Context, values map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if values == nil {
		values = map[string]string{}
	}
	resp, err := c.call(ctx, http.MethodPut, devconfig.ReportPath, values)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}
