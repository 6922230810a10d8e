package deviceapi

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/labstack/echo/v5"
)

// inventoryPut serves PUT …/inventory/device/attributes: the attributes
// replace the device's inventory. 200, as the Mender client expects.
func (a *API) inventoryPut(c *echo.Context) error { return a.inventory(c, false) }

// inventoryPatch serves PATCH …/inventory/device/attributes: the
// attributes are merged into the device's inventory (a name given again
// takes the new value). 200.
func (a *API) inventoryPatch(c *echo.Context) error { return a.inventory(c, true) }

func (a *API) inventory(c *echo.Context, merge bool) error {
	s := sessionOf(c)
	body, err := readBody(c, MaxInventoryBody)
	if err != nil {
		return err
	}
	attrs, err := DecodeInventory(body)
	if err != nil {
		return a.httpError("inventory", err)
	}
	ctx := c.Request().Context()
	id := s.claims.Subject
	if merge {
		// Read-modify-write: a device sends its inventory from one
		// process at a time, so there is nobody to race with.
		rec, err := a.opts.Store.Device(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return unauthorized(c, "unknown device: authenticate again")
		}
		if err != nil {
			return a.httpError("read device", err, "device_id", id)
		}
		old := map[string]json.RawMessage{}
		if len(rec.Inventory) > 0 && json.Unmarshal(rec.Inventory, &old) == nil {
			maps.Copy(old, attrs)
			attrs = old
		}
	}
	if len(attrs) > MaxAttributes {
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "inventory would have more than 256 attributes")
	}
	inv := encodeInventory(attrs)
	if len(inv) > store.MaxDeviceBytes-len(s.claims.Identity.Canonical()) {
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "inventory larger than the store keeps per device")
	}
	err = a.opts.Store.SetInventory(ctx, id, inv)
	if errors.Is(err, store.ErrNotFound) {
		// The store lost the device (a new store, say): authenticating
		// again records it.
		return unauthorized(c, "unknown device: authenticate again")
	}
	if errors.Is(err, store.ErrInvalid) {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return a.httpError("store inventory", err, "device_id", id)
	}
	return c.NoContent(http.StatusOK)
}
