package controller

import (
	"net/http"

	"github.com/labstack/echo/v5"
)

// audit answers GET /api/management/v1/audit?device=NAME|rollout=NAME.
func (c *Controller) audit(ctx *echo.Context) error {
	return echo.NewHTTPError(http.StatusNotImplemented, "not yet")
}

// reconcileNow answers POST /api/management/v1/reconcile: fetch now.
func (c *Controller) reconcileNow(ctx *echo.Context) error {
	return echo.NewHTTPError(http.StatusNotImplemented, "not yet")
}
